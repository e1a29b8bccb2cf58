//! The XML parser and the dialect's row conversion against hostile answers: arbitrary bytes,
//! token soups and mutated real answers (see [`crate::xml_gen`]). No input may panic. A few
//! hundred cases here; `cargo bench --bench fuzz_xml` runs the same generator for a minute
//! with a memory bound per case (CI runs it).

use crate::xml_gen::{Mutation, SEEDS, answer, apply, exercise};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn no_hostile_answer_panics_the_parser_or_the_row_conversion(body in answer()) {
        let rows = exercise(&body);
        prop_assert!(rows <= body.len(), "more rows than bytes");
    }
}

#[test]
fn every_seed_answer_parses_as_the_client_expects() {
    let rows: Vec<usize> = SEEDS[..SEEDS.len() - 1]
        .iter()
        .map(|s| exercise(s.as_bytes()))
        .collect();
    let html = licrenew::billmgr::xml::parse(SEEDS[SEEDS.len() - 1].as_bytes());

    assert_eq!(rows[0], 2, "the list seed has two rows");
    assert!(rows[1..].iter().all(|&r| r == 0));
    assert!(html.is_err(), "an HTML page is not a document");
}

#[test]
fn a_placeholder_bomb_in_an_error_message_stays_small() {
    let mut body = b"<doc></doc>".to_vec();
    apply(
        &mut body,
        &Mutation::Placeholders {
            copies: 2000,
            value_len: 2000,
        },
    );

    let (doc, _) = licrenew::billmgr::xml::parse(&body).expect("parses");
    let err = licrenew::billmgr::ApiError::from_raw(doc.error.expect("an error"));

    let msg = err.msg.expect("a message");
    assert!(
        msg.len() <= 64 * 1024,
        "a {}-byte answer became a {}-byte message",
        body.len(),
        msg.len()
    );
    assert!(msg.starts_with("xxxx"), "placeholders are still filled");
}
