//! The database under pressure: a read-only file, a read-only filesystem, a disk that fills up
//! before the intent row and after the paid call. No paid call may leave without its intent
//! row, no outcome may be lost, and the file must stay intact.
//!
//! Root bypasses file modes, so read-only is made with `chattr +i` (or `chmod` when not root)
//! and with a read-only bind mount, and a full disk with a small tmpfs: the tests that mount
//! need root (CAP_SYS_ADMIN), as CI and the development machines have.

use crate::ledger::{
    LITE, assert_invariants_at, assert_no_panic, events, place_due, read_db, seen_for, wait_for,
};
use crate::support::{Env, code, stderr};
use licrenew::sim::{Fault, FaultKind};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Runs a system command, panicking with its stderr when it fails.
fn sh(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed (these tests need root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0)
}

/// Undoes a system change when dropped, even when the test panics.
struct Undo(Vec<(String, Vec<String>)>);

impl Drop for Undo {
    fn drop(&mut self) {
        for (cmd, args) in self.0.iter().rev() {
            let _ = std::process::Command::new(cmd).args(args).status();
        }
    }
}

fn undo(cmd: &str, args: &[&str]) -> (String, Vec<String>) {
    (cmd.into(), args.iter().map(|a| a.to_string()).collect())
}

/// An account whose database lives in the folder `state/`, with two due licenses.
async fn account() -> (Env, PathBuf, Vec<(i64, chrono::NaiveDate)>) {
    let env = Env::new().await;
    // One renewal at a time, so the moment a fault marks is the only call in flight.
    env.write_config("[database]\nurl = \"state/licrenew.db\"\n[renewal]\nconcurrency = 1\n");
    env.write_policy("lite.toml", LITE);
    std::fs::create_dir(env.path("state")).expect("state dir");
    let due = place_due(&env, 3001, 2);
    (env, PathBuf::from("state/licrenew.db"), due)
}

fn bytes_of(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

#[tokio::test]
async fn a_read_only_database_file_stops_the_cycle_before_any_request_and_loses_nothing() {
    let (env, db, due) = account().await;
    let db = env.path(&db.to_string_lossy());
    let synced = env.run(&["sync"]).await;
    assert_eq!(code(&synced), 0, "{}", stderr(&synced));
    let sent_before = env.sim.requests().len();
    let file = db.to_string_lossy().into_owned();
    let guard = if is_root() {
        sh("chattr", &["+i", &file]);
        Undo(vec![undo("chattr", &["-i", &file])])
    } else {
        sh("chmod", &["0444", &file]);
        Undo(vec![undo("chmod", &["0644", &file])])
    };
    let before = bytes_of(&db);

    let out = env.run(&["renew"]).await;
    let after = bytes_of(&db);
    let sent = env.sim.requests().len();
    drop(guard);
    let retry = env.run(&["renew"]).await;

    assert_no_panic(&out);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("readonly database"),
        "{}",
        stderr(&out)
    );
    assert_eq!(sent, sent_before, "no request without a writable journal");
    assert!(before == after, "the file is untouched");
    assert_eq!(code(&retry), 0, "{}", stderr(&retry));
    assert_invariants_at(&env, &db, &due).await;
}

#[tokio::test]
async fn a_database_on_a_read_only_filesystem_stops_the_cycle_before_any_request() {
    let (env, db, due) = account().await;
    let db = env.path(&db.to_string_lossy());
    let synced = env.run(&["sync"]).await;
    assert_eq!(code(&synced), 0, "{}", stderr(&synced));
    let sent_before = env.sim.requests().len();
    let dir = env.path("state").to_string_lossy().into_owned();
    sh("mount", &["--bind", &dir, &dir]);
    let guard = Undo(vec![undo("umount", &[&dir])]);
    sh("mount", &["-o", "remount,bind,ro", &dir]);

    let out = env.run(&["renew"]).await;
    let sent = env.sim.requests().len();
    drop(guard);
    let retry = env.run(&["renew"]).await;

    assert_no_panic(&out);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Read-only file system") || stderr(&out).contains("readonly"),
        "{}",
        stderr(&out)
    );
    assert_eq!(sent, sent_before, "no request without a writable journal");
    assert_eq!(code(&retry), 0, "{}", stderr(&retry));
    assert_invariants_at(&env, &db, &due).await;
}

/// Fills the filesystem holding `dir` to the last byte; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let block = vec![0u8; 64 * 1024];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // Smaller writes take the last partial block too.
    while let Ok(n) = f.write(&[0u8; 512]) {
        if n == 0 {
            break;
        }
    }
    path
}

/// What a disk-full scenario leaves: the Env, the database path, the due licenses, the output
/// of the run that hit the full disk, and the mount (unmounted when dropped).
type DiskFull = (
    Env,
    PathBuf,
    Vec<(i64, chrono::NaiveDate)>,
    std::process::Output,
    Undo,
);

/// Mounts a 4 MiB tmpfs on `state/`, syncs into it, arms `fault`, starts `renew`, fills the disk
/// once `moment` is reached, waits for the run to end and frees the disk again.
async fn disk_full_when(fault: Fault, moment: impl Fn(&Env) -> bool) -> DiskFull {
    let (env, db, due) = account().await;
    let db = env.path(&db.to_string_lossy());
    let dir = env.path("state");
    let dirs = dir.to_string_lossy().into_owned();
    sh("mount", &["-t", "tmpfs", "-o", "size=4m", "tmpfs", &dirs]);
    let mount = Undo(vec![undo("umount", &["-l", &dirs])]);
    let synced = env.run(&["sync"]).await;
    assert_eq!(code(&synced), 0, "{}", stderr(&synced));
    env.sim.add_fault(fault);
    let child = env
        .command(&["renew"], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");

    wait_for(|| moment(&env), "the moment to fill the disk").await;
    let filler = fill(&dir);
    let out = child.wait_with_output().await.expect("output");
    std::fs::remove_file(&filler).expect("free the disk");
    crate::support::assert_no_canary("stderr", &stderr(&out));
    (env, db, due, out, mount)
}

#[tokio::test]
async fn a_disk_that_fills_before_the_intent_row_stops_the_cycle_and_nothing_is_paid() {
    let (env, db, due, out, _mount) = disk_full_when(
        Fault {
            func: Some("software.edit".into()),
            elid: Some(3001),
            kind: FaultKind::Delay { ms: 1500 },
            times: Some(1),
        },
        |env| seen_for(env, "software.edit", 3001),
    )
    .await;
    let paid = env.sim.paid_calls_total();
    let retry = env.run(&["renew"]).await;

    assert_no_panic(&out);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("database or disk is full"),
        "{}",
        stderr(&out)
    );
    assert_eq!(paid, 0, "no paid call without its intent row");
    assert_eq!(code(&retry), 0, "{}", stderr(&retry));
    assert_invariants_at(&env, &db, &due).await;
}

#[tokio::test]
async fn a_disk_that_fills_during_the_paid_call_loses_no_outcome() {
    let (env, db, due, out, _mount) = disk_full_when(
        Fault {
            func: Some("software.period".into()),
            elid: Some(3001),
            kind: FaultKind::Delay { ms: 1500 },
            times: Some(1),
        },
        |env| seen_for(env, "software.period", 3001),
    )
    .await;
    let (rows, _) = read_db(&db).await;
    let paid = env.sim.paid_calls(3001);
    let retry = env.run(&["renew"]).await;

    assert_no_panic(&out);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("database or disk is full"),
        "{}",
        stderr(&out)
    );
    assert_eq!(paid, 1, "the server applied it");
    let open = rows.iter().find(|r| r.elid == 3001).expect("intent row");
    assert_eq!(open.state, "sending", "the committed intent survives");
    assert_eq!(code(&retry), 0, "{}", stderr(&retry));
    let reconciled = events(&retry, "renewal")
        .iter()
        .any(|e| e["elid"] == 3001 && e["outcome"] == "reconciled_ok");
    assert!(reconciled, "{}", stderr(&retry));
    assert_invariants_at(&env, &db, &due).await;
}
