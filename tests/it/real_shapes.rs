//! The answers of a real BILLmanager as public evidence shows them (issue 11), against the
//! simulator speaking them: the API generation detected, 5/6 list rows that name their tariff
//! (with or without its id), a filter saved in the panel, a status change in progress.

use crate::both_apis;
use crate::ledger::{LITE, assert_invariants, assert_no_panic, events, place_due, renewal_event};
use crate::support::{Env, code, stderr, stdout};
use licrenew::config::Api;

async fn account(api: Api) -> Env {
    let env = Env::for_api(api).await;
    env.write_policy("lite.toml", LITE);
    env
}

fn views_of(env: &Env, elid: i64) -> usize {
    let elid = elid.to_string();
    env.sim
        .requests()
        .iter()
        .filter(|r| {
            r.func == env.func("software.edit")
                && !r.form.iter().any(|(k, _)| k == "sok")
                && r.form.iter().any(|(k, v)| k == "elid" && *v == elid)
        })
        .count()
}

async fn with_api_unset_the_generation_is_detected_and_renewals_work(api: Api) {
    let env = account(api).await;
    env.unpin_api();
    let due = place_due(&env, 3001, 2);

    let check = env.run(&["check", "--online"]).await;
    let out = env.run(&["renew"]).await;

    assert_eq!(code(&check), 0, "{}", stderr(&check));
    let name = match api {
        Api::Billmgr4 => "billmgr4",
        Api::Billmgr5 => "billmgr5",
    };
    assert!(
        stdout(&check).contains(&format!("api        {name} (detected)")),
        "{}",
        stdout(&check)
    );
    assert_no_panic(&out);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let detected = events(&out, "api_detected");
    assert_eq!(detected.len(), 1, "detected once per process");
    assert_eq!(detected[0]["api"], name);
    assert_eq!(renewal_event(&out, 3001)["outcome"], "ok");
    assert_eq!(renewal_event(&out, 3002)["outcome"], "ok");
    assert_invariants(&env, &due).await;
}

async fn a_pinned_generation_is_not_probed(api: Api) {
    let env = account(api).await;
    let due = place_due(&env, 3001, 1);

    let out = env.run(&["renew"]).await;

    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(events(&out, "api_detected").is_empty());
    let probes = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.form.iter().any(|(k, v)| k == "p_cnt" && v == "1"))
        .count();
    assert_eq!(probes, 0);
    assert_invariants(&env, &due).await;
}

/// 5/6 rows in one of the two shapes public evidence shows, the tariff named in a billing's
/// own words; a due license and one not due yet.
async fn billmgr5_rows(with_id: bool) {
    let env = account(Api::Billmgr5).await;
    env.unpin_api();
    env.sim.set_rows_without_pricelist_id(!with_id);
    env.sim.set_tariff_display_suffix(" (reseller)");
    let due = place_due(&env, 3001, 1);
    env.place(
        3002,
        env.p.lite,
        env.p.lite_month,
        env.today() + chrono::Duration::days(20),
        2,
    );

    let dry = env.run(&["renew", "--dry-run"]).await;
    let first = env.run(&["renew"]).await;
    let views_after_first = views_of(&env, 3002);
    let second = env.run(&["renew"]).await;

    assert_eq!(code(&dry), 0, "{}", stderr(&dry));
    let planned = renewal_event(&dry, 3001);
    assert_eq!(planned["outcome"], "dry_run", "{planned}");
    assert_eq!(planned["product"], "ISPmanager Lite", "named, not a number");
    assert!(stdout(&dry).contains("ISPmanager Lite"), "{}", stdout(&dry));
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    assert_eq!(renewal_event(&first, 3001)["outcome"], "ok");
    let skipped = renewal_event(&first, 3002);
    assert_eq!(
        skipped["reason"], "not due",
        "never rejected as unreadable: {skipped}"
    );
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    let expected_views = usize::from(!with_id);
    assert_eq!(
        views_after_first, expected_views,
        "the form is read only when the list gives no id"
    );
    assert_eq!(
        views_of(&env, 3002),
        expected_views,
        "and then once, remembered in the database"
    );
    assert_invariants(&env, &due).await;
}

#[tokio::test]
async fn billmgr5_rows_with_a_display_name_and_pricelist_id_renew_exactly_once() {
    billmgr5_rows(true).await;
}

#[tokio::test]
async fn billmgr5_rows_with_a_display_name_only_are_resolved_from_the_form_once_and_renew_exactly_once()
 {
    billmgr5_rows(false).await;
}

#[tokio::test]
async fn a_list_filter_saved_in_the_panel_is_reset_before_listing() {
    let env = account(Api::Billmgr5).await;
    let due = place_due(&env, 3001, 1);
    env.sim
        .save_list_filter("reseller", "licname", "some-other-name.example.net");

    let out = env.run(&["renew"]).await;

    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(renewal_event(&out, 3001)["outcome"], "ok");
    assert_eq!(events(&out, "filter_reset").len(), 1, "{}", stderr(&out));
    assert_invariants(&env, &due).await;
}

#[tokio::test]
async fn a_license_with_a_status_change_in_progress_is_never_paid() {
    let env = account(Api::Billmgr5).await;
    place_due(&env, 3001, 1);
    env.sim
        .set_special_status(3001, Some("Scheduled for deletion"));

    let out = env.run(&["renew"]).await;

    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let ev = renewal_event(&out, 3001);
    assert_eq!(ev["outcome"], "skipped");
    assert!(
        ev["reason"]
            .as_str()
            .is_some_and(|r| r.contains("status change in progress")),
        "{ev}"
    );
    assert_eq!(env.sim.paid_calls(3001), 0);
}

both_apis!(with_api_unset_the_generation_is_detected_and_renewals_work);
both_apis!(a_pinned_generation_is_not_probed);
