use super::progress;
use crate::cli::{ImageCommand, ImageFlavor};
use crate::config::Settings;
use crate::error::Result;
use crate::image::{BuildInputs, BuildRequest, Flavor, build};

pub async fn run(settings: &Settings, cmd: ImageCommand, quiet: bool) -> Result<()> {
    match cmd {
        ImageCommand::Build { offline, base_image, tag, rebuild_base, flavor, packages, ca_cert, print_digest } => {
            let flavor = match flavor {
                ImageFlavor::Full => Flavor::Full,
                ImageFlavor::Minimal => Flavor::Minimal,
            };
            let req = BuildRequest {
                tag: tag.clone(),
                base_image,
                offline,
                rebuild_base,
                flavor,
                extra_packages: packages,
                ca_certs: ca_cert,
            };
            // Bad names and files are reported before Docker is reached.
            let inputs = BuildInputs::from_request(&req)?;
            if print_digest {
                println!("{}", inputs.digest());
                return Ok(());
            }
            let engine = crate::engine::connect(settings).await?;
            let report = progress(quiet);
            build(engine.as_ref(), &req, &report).await?;
            println!("{tag}");
            Ok(())
        }
    }
}
