//! `licrenew demo`: the whole product on one machine with nothing to set up. Starts the
//! simulator in-process with sample licenses, writes a temporary config with sample policies
//! and a database file, and runs the real service on a fast schedule until Ctrl-C.
//!
//! Must not touch anything outside its temporary folder, or any real billing.

use crate::config::LogFormat;
use std::process::ExitCode;

const POLICIES: &[(&str, &str)] = &[
    (
        "ispmanager-lite.toml",
        r#"# Renew ISPmanager Lite monthly, ten days ahead; never the test boxes.
product = "ISPmanager Lite"
renew = true
period = "1 month"
before = "10d"

[[except]]
licname = "srv00*"
renew = false
"#,
    ),
    (
        "ispmanager-pro.toml",
        "product = \"ISPmanager Pro\"\nrenew = true\nperiod = \"1 month\"\nbefore = \"10d\"\n",
    ),
    (
        "vdsmanager-linux.toml",
        "product = \"VDSmanager-Linux\"\nrenew = true\nperiod = \"1 month\"\nbefore = \"7d\"\n",
    ),
    (
        "billmanager-standard.toml",
        "product = 432\nrenew = true\nperiod = \"1 year\"\nbefore = \"14d\"\n",
    ),
    (
        "dsmanager.toml",
        "# DSmanager licenses are left to lapse on purpose.\nproduct = \"DSmanager\"\nrenew = false\n",
    ),
];

/// Runs the demo until Ctrl-C.
pub async fn run(licenses: usize, every: u32) -> anyhow::Result<ExitCode> {
    if !(1..=59).contains(&every) {
        anyhow::bail!("--every must be between 1 and 59 seconds");
    }
    crate::telemetry::init(LogFormat::Pretty, "info");
    let password = "demo-password";
    let sim = crate::sim::start(
        "127.0.0.1:0".parse()?,
        crate::sim::SimConfig {
            licenses,
            seed: 7,
            username: "demo".into(),
            password: password.into(),
            ..crate::sim::SimConfig::default()
        },
    )
    .await?;
    let dir = tempfile_dir()?;
    let policies_dir = dir.join("policies.d");
    std::fs::create_dir_all(&policies_dir)?;
    for (name, text) in POLICIES {
        std::fs::write(policies_dir.join(name), text)?;
    }
    std::fs::write(dir.join("password"), password)?;
    let config = dir.join("licrenew.toml");
    std::fs::write(
        &config,
        format!(
            r#"# Written by `licrenew demo`.
[billmgr]
url = "{url}"
username = "demo"
password_file = "password"
timeout = "10s"

[database]
url = "licrenew.db"

[schedule]
cron = "*/{every} * * * * *"
window = "30d"
jitter = "1s"

[renewal]
max_per_cycle = 8
concurrency = 2
settle = "5m"

[log]
format = "pretty"
level = "info"
"#,
            url = sim.url()
        ),
    )?;
    let settings = crate::config::load(&config)?;
    // Under `api = "auto"` (the default, as here) the generation is detected by the first
    // cycle; until then the policies are checked against either catalog.
    let policies = crate::policy::load::load_offline(&settings)?;
    println!("licrenew demo");
    println!(
        "  simulated BILLmanager: {} ({} sample licenses)",
        sim.url(),
        licenses
    );
    println!("  config and database:  {}", dir.display());
    println!(
        "  policies:             {}",
        POLICIES
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  a cycle every {every}s (at most 8 renewals each); Ctrl-C to stop.");
    println!();
    crate::daemon::run(settings, policies).await?;
    println!();
    println!(
        "demo finished: the simulator was paid for {} renewal(s); journal: licrenew --config {} history",
        sim.paid_calls_total(),
        config.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A fresh folder under the system temp dir, kept after exit so the journal can be read.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("licrenew-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
