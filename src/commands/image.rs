use super::progress;
use crate::cli::ImageCommand;
use crate::error::Result;
use crate::image::{BuildRequest, build};
use crate::runtime::Docker;

pub async fn run(cmd: ImageCommand, quiet: bool) -> Result<()> {
    match cmd {
        ImageCommand::Build { offline, base_image, tag, rebuild_base } => {
            let docker = Docker::connect().await?;
            let report = progress(quiet);
            build(&docker, &BuildRequest { tag: tag.clone(), base_image, offline, rebuild_base }, &report).await?;
            println!("{tag}");
            Ok(())
        }
    }
}
