use super::*;

#[test]
fn passwd_entry_replaces_a_clash() {
    let file = b"root:x:0:0::/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\nalicex:x:1:1::/:/bin/sh";
    let out = String::from_utf8(with_entry(file, "alice", "alice:x:20000:20000::/home/alice:/bin/bash\n")).unwrap();
    assert_eq!(
        out,
        "root:x:0:0::/root:/bin/bash\nalicex:x:1:1::/:/bin/sh\nalice:x:20000:20000::/home/alice:/bin/bash\n"
    );
}
