//! MIG placement benchmark: how much demand a host of 8 x A100-SXM4-40GB serves under three ways
//! of handing out MIG slices, on the same seeded random session streams.
//!
//!   (a) static: every GPU pre-split into 3g.20gb + 2g.10gb + 2 x 1g.5gb; a request takes a free
//!       instance of exactly its profile, and profiles not in the split are refused;
//!   (b) lowest: the instance is created on the lowest free placement of the lowest GPU;
//!   (c) sandman: created where `placement::choose` puts it (what the sim and NVML backends use).
//!
//! Sessions arrive as a Poisson process and last an exponential time (mean 1); a refused request
//! is lost. Offered load = arrival rate x mean duration x mean compute slices / 56 (the host's
//! compute slices). Run: `cargo run --release --example mig_placement`. It prints a markdown
//! table and writes it into bench/results.md under "MIG placement".

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;

use sandman::gpu::catalog::{self, Model, Profile};
use sandman::gpu::placement::{self, Layout};

const GPUS: usize = 8;
const HOST_SLICES: f64 = 56.0;
const WARMUP: usize = 2_000;
const MEASURED: usize = 20_000;
const SEEDS: [u64; 3] = [1, 2, 3];
const LOADS: [f64; 3] = [0.6, 0.9, 1.2];

/// Profile mixes: (name, [(profile, weight)]).
const MIXES: [(&str, &[(&str, f64)]); 3] = [
    ("small only (1g 50%, 2g 30%, 3g 20%)", &[("1g.5gb", 0.5), ("2g.10gb", 0.3), ("3g.20gb", 0.2)]),
    (
        "small-weighted (1g 35%, 2g 25%, 3g 20%, 4g 12%, 7g 8%)",
        &[("1g.5gb", 0.35), ("2g.10gb", 0.25), ("3g.20gb", 0.20), ("4g.20gb", 0.12), ("7g.40gb", 0.08)],
    ),
    (
        "uniform (1g, 2g, 3g, 4g, 7g 20% each)",
        &[("1g.5gb", 0.2), ("2g.10gb", 0.2), ("3g.20gb", 0.2), ("4g.20gb", 0.2), ("7g.40gb", 0.2)],
    ),
];

/// splitmix64: tiny, seedable, good enough for a simulation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    fn exp(&mut self, mean: f64) -> f64 {
        -self.unit().ln() * mean
    }
}

struct Arrival {
    at: f64,
    duration: f64,
    profile: &'static Profile,
}

fn stream(model: &'static Model, mix: &[(&str, f64)], load: f64, seed: u64) -> Vec<Arrival> {
    let total_weight: f64 = mix.iter().map(|(_, w)| w).sum();
    let profiles: Vec<(&'static Profile, f64)> =
        mix.iter().map(|(name, w)| (model.profile(name).unwrap(), w / total_weight)).collect();
    let mean_slices: f64 = profiles.iter().map(|(p, w)| p.compute_slices as f64 * w).sum();
    let rate = load * HOST_SLICES / mean_slices;
    let mut rng = Rng(seed);
    let mut at = 0.0;
    (0..WARMUP + MEASURED)
        .map(|_| {
            at += rng.exp(1.0 / rate);
            let duration = rng.exp(1.0);
            let mut pick = rng.unit();
            let mut profile = profiles[profiles.len() - 1].0;
            for (p, w) in &profiles {
                if pick <= *w {
                    profile = p;
                    break;
                }
                pick -= w;
            }
            Arrival { at, duration, profile }
        })
        .collect()
}

/// A way of handing out slices. `admit` returns a token for `depart`, or None when refused.
trait Policy {
    fn admit(&mut self, profile: &'static Profile) -> Option<usize>;
    fn depart(&mut self, token: usize);
}

/// (a) Fixed instances; a token is an instance index.
struct Static {
    instances: Vec<(&'static Profile, bool)>,
}

impl Static {
    fn new(model: &'static Model) -> Static {
        let split = ["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"];
        // The split must be a valid geometry; build it with the placement rules to be sure.
        let mut layout = Layout::new(model);
        for name in split {
            let c = placement::choose(std::slice::from_ref(&layout), name).unwrap();
            assert!(layout.place(c.profile, c.start));
        }
        let instances = (0..GPUS).flat_map(|_| layout.placed.iter().map(|p| (p.profile, false))).collect();
        Static { instances }
    }
}

impl Policy for Static {
    fn admit(&mut self, profile: &'static Profile) -> Option<usize> {
        let i = self.instances.iter().position(|(p, busy)| !busy && p.name == profile.name)?;
        self.instances[i].1 = true;
        Some(i)
    }

    fn depart(&mut self, token: usize) {
        self.instances[token].1 = false;
    }
}

/// (b) and (c): instances created on demand and destroyed when the session ends.
struct Dynamic {
    gpus: Vec<Layout>,
    choose: fn(&[Layout], &str) -> Option<placement::Choice>,
    live: Vec<Option<placement::Choice>>,
}

impl Dynamic {
    fn new(model: &'static Model, choose: fn(&[Layout], &str) -> Option<placement::Choice>) -> Self {
        Dynamic { gpus: (0..GPUS).map(|_| Layout::new(model)).collect(), choose, live: Vec::new() }
    }
}

impl Policy for Dynamic {
    fn admit(&mut self, profile: &'static Profile) -> Option<usize> {
        let c = (self.choose)(&self.gpus, profile.name)?;
        assert!(self.gpus[c.gpu].place(c.profile, c.start));
        self.live.push(Some(c));
        Some(self.live.len() - 1)
    }

    fn depart(&mut self, token: usize) {
        let c = self.live[token].take().unwrap();
        assert!(self.gpus[c.gpu].remove(c.profile, c.start));
    }
}

#[derive(Default, Clone, Copy)]
struct Tally {
    requests: u64,
    served: u64,
    slice_time: f64,
    served_slice_time: f64,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.requests += o.requests;
        self.served += o.served;
        self.slice_time += o.slice_time;
        self.served_slice_time += o.served_slice_time;
    }

    fn served_fraction(&self) -> f64 {
        self.served as f64 / self.requests as f64
    }

    fn slice_time_fraction(&self) -> f64 {
        self.served_slice_time / self.slice_time
    }
}

fn run(policy: &mut dyn Policy, arrivals: &[Arrival]) -> Tally {
    // Departures by end time; positive f64 bit patterns sort like the numbers.
    let mut ends: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut tally = Tally::default();
    for (i, a) in arrivals.iter().enumerate() {
        while let Some(&Reverse((end, token))) = ends.peek() {
            if f64::from_bits(end) > a.at {
                break;
            }
            ends.pop();
            policy.depart(token);
        }
        let admitted = policy.admit(a.profile);
        if let Some(token) = admitted {
            ends.push(Reverse(((a.at + a.duration).to_bits(), token)));
        }
        if i < WARMUP {
            continue;
        }
        let slice_time = a.profile.compute_slices as f64 * a.duration;
        tally.requests += 1;
        tally.slice_time += slice_time;
        if admitted.is_some() {
            tally.served += 1;
            tally.served_slice_time += slice_time;
        }
    }
    tally
}

fn main() {
    let model = catalog::model("NVIDIA A100-SXM4-40GB").unwrap();
    let mut table = String::new();
    let mut ratios = String::new();
    writeln!(
        table,
        "| mix | load | (a) static: requests | (a) slice-time | (b) lowest: requests | \
         (b) slice-time | (c) sandman: requests | (c) slice-time |"
    )
    .unwrap();
    writeln!(table, "|---|---|---|---|---|---|---|---|").unwrap();
    writeln!(ratios, "| mix | load | (c)/(a) slice-time | (c)/(b) slice-time | (c)/(b) per seed, min-max |").unwrap();
    writeln!(ratios, "|---|---|---|---|---|").unwrap();
    let mut targets = String::from("Targets at load 0.9:\n\n");
    for (mix_name, mix) in MIXES {
        let has_large = mix.iter().any(|(p, _)| p.starts_with("4g") || p.starts_with("7g"));
        for load in LOADS {
            let mut t = [Tally::default(); 3];
            let mut per_seed = Vec::new();
            for seed in SEEDS {
                let arrivals = stream(model, mix, load, seed);
                let a = run(&mut Static::new(model), &arrivals);
                let b = run(&mut Dynamic::new(model, placement::lowest), &arrivals);
                let c = run(&mut Dynamic::new(model, placement::choose), &arrivals);
                per_seed.push(c.slice_time_fraction() / b.slice_time_fraction());
                for (total, x) in t.iter_mut().zip([a, b, c]) {
                    total.add(x);
                }
            }
            let mut row = format!("| {mix_name} | {load} |");
            for x in &t {
                write!(row, " {:.1}% | {:.1}% |", 100.0 * x.served_fraction(), 100.0 * x.slice_time_fraction())
                    .unwrap();
            }
            writeln!(table, "{row}").unwrap();
            let c = t[2].slice_time_fraction();
            let (vs_static, vs_lowest) = (c / t[0].slice_time_fraction(), c / t[1].slice_time_fraction());
            if load == 0.9 {
                let verdict = |ok: bool| if ok { "met" } else { "missed" };
                if has_large {
                    writeln!(targets, "- {mix_name}: (c)/(a) = {vs_static:.3} >= 1.3: {}", verdict(vs_static >= 1.3))
                        .unwrap();
                }
                writeln!(targets, "- {mix_name}: (c)/(b) = {vs_lowest:.3} >= 1.03: {}", verdict(vs_lowest >= 1.03))
                    .unwrap();
            }
            let min = per_seed.iter().copied().fold(f64::INFINITY, f64::min);
            let max = per_seed.iter().copied().fold(0.0, f64::max);
            writeln!(ratios, "| {mix_name} | {load} | {vs_static:.3} | {vs_lowest:.3} | {min:.3}-{max:.3} |").unwrap();
        }
    }

    let section = format!(
        "## MIG placement\n\n\
         `cargo run --release --example mig_placement` (bench/mig_placement.rs). Host: {GPUS} x \
         NVIDIA A100-SXM4-40GB (56 compute slices). Poisson arrivals, exponential durations (mean \
         1), refused requests are lost. Per cell: seeds {SEEDS:?}, each {MEASURED} measured \
         arrivals after {WARMUP} warm-up arrivals, the same streams for every policy. Load = \
         offered compute-slice load / 56. \"requests\" = fraction of requests served; \
         \"slice-time\" = fraction of the demanded compute slices x duration served.\n\n\
         (a) static split per GPU 3g.20gb + 2g.10gb + 2 x 1g.5gb, exact profile only; \
         (b) create at the lowest free placement of the lowest GPU; \
         (c) create where sandman's `placement::choose` puts it.\n\n\
         {table}\n{ratios}\n{targets}"
    );
    print!("{section}");
    write_results(&section);
}

/// Puts `section` into bench/results.md, replacing an earlier "MIG placement" section only.
fn write_results(section: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/results.md");
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmark results\n".into());
    let heading = "## MIG placement\n";
    let new = match old.find(heading) {
        Some(begin) => {
            let after = begin + heading.len();
            // The section ends where the next one begins.
            let rest = old[after..].find("\n## ").map_or("", |i| &old[after + i + 1..]);
            if rest.is_empty() {
                format!("{}{section}", &old[..begin])
            } else {
                format!("{}{section}\n{rest}", &old[..begin])
            }
        }
        None => format!("{}\n\n{section}", old.trim_end()),
    };
    std::fs::write(path, new).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    eprintln!("written to {path}");
}
