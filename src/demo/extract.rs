//! What the demo shows a participant and checks for them: the register
//! extract (GDPR art. 15, `POST /v1/disclosures`) one line per message, and
//! that no persona's number appears in clear in the audit export.

use serde_json::Value;

use super::audit::fail;
use super::explain;
use super::out::Out;
use super::script::{ALVA, BERIT, NILS, OMAR};
use super::Tally;

/// No persona's number may appear in the exported log in any form.
pub fn pii_scan(out: &Out, tally: &mut Tally, text: &str) {
    let found = [ALVA, NILS, BERIT, OMAR].iter().any(|p| {
        let short = p.number.get(2..).unwrap_or_default();
        let dashed = |s: &str, at: usize| {
            format!(
                "{}-{}",
                s.get(..at).unwrap_or(""),
                s.get(at..).unwrap_or("")
            )
        };
        [
            p.number.to_owned(),
            dashed(p.number, 8),
            short.to_owned(),
            dashed(short, 6),
        ]
        .iter()
        .any(|f| text.contains(f.as_str()))
    });
    if found {
        fail(
            out,
            tally,
            "a personnummer appears in clear in the audit export".into(),
        );
    } else {
        out.note("no personnummer in clear in the log: subjects are audit-domain pseudonyms");
    }
}

/// One line per exchange (the newest record of each), newest first.
pub fn disclosures(out: &Out, v: &Value) {
    let list = v
        .get("disclosures")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    let latest: Vec<&Value> = list
        .iter()
        .filter(|e| {
            // A reply shares its exchange id; it is a message of its own.
            let key = ["exchange_id", "from", "to"]
                .map(|k| e.get(k).and_then(Value::as_str).unwrap_or("").to_owned());
            key[0].is_empty() || seen.insert(key)
        })
        .collect();
    out.ok(
        "extract",
        &format!(
            "{} messages about {} ({} records), newest first",
            latest.len(),
            ALVA.label(),
            list.len()
        ),
    );
    for e in latest {
        let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
        let time: String = s("time").replace('T', " ").chars().take(19).collect();
        let fields = explain::strings(e, "forwarded").len();
        out.line(&format!(
            "{time}  {} → {}  {} ({}): {}, {fields} fields",
            s("from"),
            s("to"),
            s("type"),
            s("purpose"),
            s("decision")
        ));
    }
}
