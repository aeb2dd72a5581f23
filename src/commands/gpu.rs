use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};

use super::print_json;
use crate::cli::GpuCommand;
use crate::error::Result;
use crate::sessions::Sessions;
use crate::views::{AvailableView, GpusView, ProfilesView};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

pub fn run(sessions: &Sessions, cmd: GpuCommand) -> Result<()> {
    let backend = sessions.gpu().name();
    match cmd {
        GpuCommand::SimBusy { device, processes } => {
            sessions.set_sim_gpu_processes(&device, processes)?;
            eprintln!("simulated device {device} now runs {processes} compute process(es)");
        }
        GpuCommand::Ls { json } => {
            let gpus = sessions.gpus()?;
            if json {
                return print_json(&GpusView::new(gpus));
            }
            if gpus.is_empty() {
                eprintln!("no GPUs (gpu backend: {backend})");
                return Ok(());
            }
            let mut table = Table::new();
            table.load_preset(UTF8_BORDERS_ONLY).set_header([
                "GPU / MIG DEVICE",
                "NAME / PROFILE",
                "MEMORY",
                "MIG",
                "HELD",
            ]);
            for g in &gpus {
                table.add_row([
                    g.uuid.clone(),
                    g.name.clone(),
                    format!("{:.1} / {:.1} GiB used", g.memory_used as f64 / GIB, g.memory_total as f64 / GIB),
                    if g.mig_enabled { "on".into() } else { "off".into() },
                    String::new(),
                ]);
                for m in &g.mig_instances {
                    table.add_row([
                        format!("  {}", m.uuid),
                        format!(
                            "  {} (GI {} CI {}, slice {})",
                            m.profile, m.gpu_instance_id, m.compute_instance_id, m.placement_start
                        ),
                        format!("{:.1} GiB", m.memory as f64 / GIB),
                        if m.created_by_sandman { "sandman".into() } else { String::new() },
                        if m.allocated { "yes".into() } else { "free".into() },
                    ]);
                }
            }
            println!("{table}");
        }
        GpuCommand::Profiles { json } => {
            let profiles = sessions.gpu().profiles()?;
            if json {
                return print_json(&ProfilesView { profiles });
            }
            if profiles.is_empty() {
                eprintln!("no MIG profiles (gpu backend: {backend})");
                return Ok(());
            }
            let mut table = Table::new();
            table.load_preset(UTF8_BORDERS_ONLY).set_header([
                "PROFILE",
                "COMPUTE",
                "MEMORY SLICES",
                "MEMORY",
                "DESCRIPTION",
            ]);
            for p in &profiles {
                table.add_row([
                    p.name.clone(),
                    p.compute_slices.to_string(),
                    p.memory_slices.to_string(),
                    format!("{:.1} GiB", p.memory_size as f64 / GIB),
                    p.description.clone(),
                ]);
            }
            println!("{table}");
        }
        GpuCommand::Available { json } => {
            let free = sessions.available()?;
            if json {
                return print_json(&AvailableView::new(free));
            }
            if free.is_empty() {
                eprintln!("no free MIG devices (gpu backend: {backend})");
                return Ok(());
            }
            let mut table = Table::new();
            table.load_preset(UTF8_BORDERS_ONLY).set_header(["MIG DEVICE", "PROFILE", "MEMORY", "PARENT GPU"]);
            for m in &free {
                table.add_row([
                    m.uuid.clone(),
                    m.profile.clone(),
                    format!("{:.1} GiB", m.memory as f64 / GIB),
                    m.parent_gpu.clone(),
                ]);
            }
            println!("{table}");
        }
    }
    Ok(())
}
