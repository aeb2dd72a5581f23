use super::progress;
use crate::cli::ImageCommand;
use crate::config::Settings;
use crate::error::Result;
use crate::image::{BuildRequest, build};

pub async fn run(settings: &Settings, cmd: ImageCommand, quiet: bool) -> Result<()> {
    match cmd {
        ImageCommand::Build { offline, base_image, tag, rebuild_base } => {
            let engine = crate::engine::connect(settings).await?;
            let report = progress(quiet);
            build(engine.as_ref(), &BuildRequest { tag: tag.clone(), base_image, offline, rebuild_base }, &report)
                .await?;
            println!("{tag}");
            Ok(())
        }
    }
}
