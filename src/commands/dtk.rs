//! `kubectl kmm dtk`: release → driver-toolkit image → kernel.

use crate::cli::DtkArgs;
use crate::error::{ExitStatus, Result};
use crate::output::{self, Term};
use crate::registry::cache::Cache;
use crate::release::{self, Arch, Payload, ReleaseSpec};

pub async fn run(args: DtkArgs, term: &Term) -> Result<ExitStatus> {
    let spec = ReleaseSpec::parse(&args.release)?;
    let release_repo = release::parse_release_repo(Some(&args.release_repo.release_repo))?;
    let arch = args.arch.unwrap_or(Arch::X86_64);
    let image = spec.image(&release_repo, Payload::Single(arch));

    let credentials = super::local_credentials(&args.registry)?;
    let mirrors = super::file_mirrors(&args.registry)?;
    let registry = super::registry(
        &args.registry,
        args.request_timeout.0,
        credentials,
        mirrors,
        term,
    )?;
    let cache = Cache::new(args.registry.no_cache);

    term.step(format!(
        "reading release {image} from registry {}",
        image.registry
    ));
    let (answer, resolution) = release::resolve(&registry, &cache, &image, arch).await?;
    term.step_done();
    release::require_arch(&answer, args.arch)?;
    for warning in &resolution.warnings {
        term.warn(warning);
    }
    output::dtk::report_transfer(term, &resolution, registry.transferred());
    output::dtk::print(&answer, args.output);
    Ok(ExitStatus::Success)
}
