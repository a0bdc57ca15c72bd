//! The story (DOMAIN §3, §7): consents recorded at referral, then the
//! exchanges of Alva's path through the team, Nils's withdrawal and the
//! denial that follows, Berit's protected identity, two default denials and
//! the statistics, each sent through `POST /v1/exchanges` by the sending
//! party's own mTLS client.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::client::Rsp;
use super::explain::{self, Explainer};
use super::out::Out;
use super::script::{
    alva_path, attendance, example, referral, Ex, Expect, Persona, ALVA, BERIT, FOLLOW_UP, NILS,
    OMAR, PARTIES, REHAB,
};
use super::setup::{Deployment, INTAKE};
use super::{DemoError, Tally};
use crate::clock::Clock;

struct Play<'a> {
    d: &'a Deployment,
    out: &'a Out,
    tally: &'a mut Tally,
    explain: Explainer<'a>,
    exchanges_missing: bool,
    consents: BTreeMap<&'static str, String>,
}

/// Plays the story. Only transport failures end it early.
/// Long: the demo's story as one script, chapter by chapter; it is the demo's
/// table of contents.
pub async fn play(d: &Deployment, out: &Out, tally: &mut Tally) -> Result<(), DemoError> {
    let mut p = Play {
        d,
        out,
        tally,
        explain: Explainer::new(&d.config),
        exchanges_missing: false,
        consents: BTreeMap::new(),
    };
    let all: Vec<&str> = crate::schema::Category::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    out.chapter("1. Consent at referral: the participant signs, the remissgrupp records it");
    p.consent(ALVA, &all, "written consent at referral", None, false)
        .await?;
    p.consent(
        NILS,
        &all,
        "given by his god man, as a representative",
        Some("god-man:Gunnar Godmansson"),
        false,
    )
    .await?;
    p.consent(
        BERIT,
        &all,
        "protected identity: contact data never leaves the gateway",
        None,
        true,
    )
    .await?;

    out.chapter("2. Alva's path through the team");
    for ex in alva_path() {
        p.exchange(ex).await?;
    }
    p.show_consent(ALVA, "after the closure").await?;

    out.chapter("3. Nils takes part for two months, then withdraws his consent");
    p.exchange(referral(NILS, "kommun-kalmar", "KK-REM-2025-0032"))
        .await?;
    p.exchange(Ex {
        why: "his first monthly attendance report",
        ..attendance(NILS, "kommun-kalmar", Expect::Delivered)
    })
    .await?;
    p.revoke(NILS).await?;
    p.notices().await;
    p.exchange(Ex {
        why: "the next report after the withdrawal must not leave the gateway",
        ..attendance(NILS, "kommun-kalmar", Expect::Denied("consent_revoked"))
    })
    .await?;

    out.chapter("4. Berit has a protected identity: contact data is never forwarded");
    p.exchange(Ex {
        expect: Expect::Delivered,
        why: "her consent covers contact, but the protected-identity marking withholds it",
        ..referral(BERIT, "kommun-kalmar", "KK-REM-2025-0051")
    })
    .await?;

    out.chapter("5. Default deny");
    p.exchange(Ex {
        from: "af",
        to: "region-kalmar",
        ty: "medical-certificate",
        purpose: REHAB,
        who: Some(ALVA),
        payload: example("medical-certificate"),
        expect: Expect::Denied("route_not_allowed"),
        why: "no route lets AF send medical certificates",
    })
    .await?;
    p.exchange(Ex {
        why: "Omar has given no consent here",
        ..attendance(OMAR, "af", Expect::Denied("consent_missing"))
    })
    .await?;

    out.chapter("6. Statistics for the samordningsförbund (SUS): aggregates, no person");
    p.exchange(Ex {
        from: "kommun-kalmar",
        to: "sfk-kalmar",
        ty: "statistics-report",
        purpose: "statistik",
        who: None,
        payload: example("statistics-report"),
        expect: Expect::Delivered,
        why: "no subject, so no consent is needed",
    })
    .await?;
    Ok(())
}

impl Play<'_> {
    fn unavailable(&mut self, what: &str, rsp: &Rsp) {
        self.out.warn(&format!(
            "{what} is not available yet in this build ({}): skipped",
            rsp.reason()
        ));
        if !self.tally.unavailable.iter().any(|u| u == what) {
            self.tally.unavailable.push(what.to_owned());
        }
    }

    fn surprise(&mut self, text: String) {
        self.out
            .warn(&format!("not what the story expects: {text}"));
        self.tally.surprises.push(text);
    }

    async fn consent(
        &mut self,
        who: Persona,
        categories: &[&str],
        note: &str,
        given_by: Option<&str>,
        protected_identity: bool,
    ) -> Result<(), DemoError> {
        self.out.step(&format!(
            "{INTAKE} records the consent of {} ({note})",
            who.label()
        ));
        let args = crate::cli::ConsentSignArgs {
            key: self.d.path().join("keys/issuer-sfk-kalmar-intake.pem"),
            issuer: "sfk-kalmar-intake".into(),
            key_id: crate::init::CONSENT_ISSUER_KEY_ID.into(),
            subject: who.number.into(),
            parties: PARTIES.iter().map(|s| (*s).to_owned()).collect(),
            purposes: vec![REHAB.into(), FOLLOW_UP.into()],
            categories: categories.iter().map(|s| (*s).to_owned()).collect(),
            days: 700,
            method: "written".into(),
            recorded_by: "remissgrupp.kalmar".into(),
            given_by: given_by.map(str::to_owned),
            protected_identity,
        };
        let now = crate::clock::SystemClock.now().unix_timestamp();
        let token = crate::consent::cli::sign_consent(&args, now).map_err(DemoError::Setup)?;
        let rsp = self
            .d
            .client(INTAKE)?
            .post("/v1/consents", &json!({ "token": token }))
            .await?;
        if rsp.unavailable() {
            self.unavailable("POST /v1/consents", &rsp);
            return Ok(());
        }
        if rsp.status != 201 {
            self.out.denied("refused", &rsp.reason());
            self.surprise(format!(
                "consent for {} was refused: {}",
                who.name,
                rsp.reason()
            ));
            return Ok(());
        }
        let s = &rsp.json;
        let id = s.get("id").and_then(Value::as_str).unwrap_or_default();
        self.out.ok(
            "recorded",
            &format!(
                "consent {id} ({}), method {}, signed by sfk-kalmar-intake",
                s.get("state").and_then(Value::as_str).unwrap_or("?"),
                s.get("method").and_then(Value::as_str).unwrap_or("?"),
            ),
        );
        self.out.line(&format!(
            "between {}; for {}",
            explain::strings(s, "parties").join(", "),
            explain::strings(s, "purposes").join(", ")
        ));
        self.out.note(&format!(
            "stored under the consent-domain {}, not the personnummer",
            explain::identifier(s.get("subject"))
        ));
        if let Some(g) = s.get("given_by").filter(|g| g.is_object()) {
            self.out.line(&format!(
                "given by a representative: {} ({})",
                g.get("name").and_then(Value::as_str).unwrap_or("?"),
                g.get("role").and_then(Value::as_str).unwrap_or("?")
            ));
        }
        if s.get("protected_identity").and_then(Value::as_bool) == Some(true) {
            self.out
                .line("protected identity: contact fields are never forwarded");
        }
        self.consents.insert(who.name, id.to_owned());
        self.tally.as_expected += 1;
        Ok(())
    }

    /// Shows a consent's state and history (after Alva's closure).
    async fn show_consent(&mut self, who: Persona, when: &str) -> Result<(), DemoError> {
        let Some(id) = self.consents.get(who.name).cloned() else {
            return Ok(());
        };
        let rsp = self
            .d
            .client(INTAKE)?
            .get(&format!("/v1/consents/{id}"))
            .await?;
        let s = &rsp.json;
        let state = s.get("state").and_then(Value::as_str).unwrap_or("?");
        let until = s
            .pointer("/closure/follow_up_until")
            .and_then(Value::as_str)
            .unwrap_or("-");
        self.out.note(&format!(
            "{}'s consent {when}: {state}, for uppfoljning only, until {until}",
            who.name
        ));
        let events: Vec<&str> = s
            .get("history")
            .and_then(Value::as_array)
            .map(|h| {
                h.iter()
                    .filter_map(|e| e.get("event").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        self.out.line(&format!("history: {}", events.join(" → ")));
        if state != "closed" {
            self.surprise(format!(
                "{}'s consent is {state} after the closure",
                who.name
            ));
        }
        Ok(())
    }

    /// Waits for the revocation notices and shows where they arrived.
    async fn notices(&mut self) {
        let mut got = Vec::new();
        for _ in 0..100 {
            got = self
                .d
                .inboxes
                .iter()
                .flat_map(|(party, inbox)| {
                    inbox
                        .of_type("consent-revoked")
                        .into_iter()
                        .map(move |d| (party.clone(), d))
                })
                .collect();
            if got.len() >= 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if got.is_empty() {
            self.surprise("no revocation notice arrived".to_owned());
            return;
        }
        for (party, d) in got {
            let ids = d
                .body
                .get("exchange_ids")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let signed = if d.signature_valid == Some(true) {
                "signature verified"
            } else {
                "signature does NOT verify"
            };
            self.out.ok(
                "notified",
                &format!(
                    "{party} received consent-revoked for the {ids} exchange(s) it holds, subject {}; {signed}",
                    explain::identifier(d.body.get("subject"))
                ),
            );
        }
        self.tally.as_expected += 1;
    }

    async fn revoke(&mut self, who: Persona) -> Result<(), DemoError> {
        self.out.step(&format!(
            "{} withdraws: {INTAKE} revokes the consent",
            who.label()
        ));
        let Some(id) = self.consents.get(who.name).cloned() else {
            self.out
                .warn("no consent was recorded, so there is nothing to revoke");
            return Ok(());
        };
        let rsp = self
            .d
            .client(INTAKE)?
            .post(
                &format!("/v1/consents/{id}/revocation"),
                &json!({ "reason": "the participant withdrew" }),
            )
            .await?;
        if rsp.unavailable() {
            self.unavailable("POST /v1/consents/{id}/revocation", &rsp);
        } else if rsp.status == 200 {
            let state = rsp.json.get("state").and_then(Value::as_str).unwrap_or("?");
            self.out
                .ok("revoked", &format!("consent {id} is now {state}"));
            self.tally.as_expected += 1;
        } else {
            self.out.denied("refused", &rsp.reason());
            self.surprise(format!(
                "revocation for {} failed: {}",
                who.name,
                rsp.reason()
            ));
        }
        Ok(())
    }

    async fn exchange(&mut self, ex: Ex) -> Result<(), DemoError> {
        let about = ex
            .who
            .map(|w| format!("about {}", w.label()))
            .unwrap_or_else(|| "about no one (aggregate)".to_owned());
        self.out
            .step(&format!("{} → {}: {} {about}", ex.from, ex.to, ex.ty));
        let mode = self.explain.subject_mode(ex.from, ex.to, ex.ty, ex.purpose);
        let mut why = match mode {
            Some(mode) => format!("purpose {}; subject {mode} by the route", ex.purpose),
            None => format!("purpose {}; no route", ex.purpose),
        };
        if !ex.why.is_empty() {
            why = format!("{}; {why}", ex.why);
        }
        self.out.note(&why);
        if self.exchanges_missing {
            self.out
                .note("skipped: the exchange API is not available yet");
            return Ok(());
        }
        let mut body = json!({
            "to": ex.to, "type": ex.ty, "purpose": ex.purpose,
            "delivery": "sync", "payload": ex.payload,
        });
        if let (Some(w), Some(o)) = (ex.who, body.as_object_mut()) {
            o.insert("subject".into(), json!(w.number));
        }
        self.out.progress("sending over mTLS");
        let rsp = self.d.client(ex.from)?.post("/v1/exchanges", &body).await?;
        if rsp.unavailable() {
            self.exchanges_missing = true;
            self.unavailable("POST /v1/exchanges", &rsp);
            return Ok(());
        }
        if rsp.status == 200 {
            if let Err(problem) = self.delivered(&ex, &rsp) {
                self.surprise(problem);
            } else if matches!(ex.expect, Expect::Denied(_)) {
                self.surprise(format!("{} {} → {} was delivered", ex.ty, ex.from, ex.to));
            } else {
                self.tally.as_expected += 1;
            }
            return Ok(());
        }
        let code = rsp.problem().unwrap_or("").to_owned();
        self.out.denied("denied", &rsp.reason());
        match ex.expect {
            Expect::Denied(want) if want == code => self.tally.as_expected += 1,
            _ => self.surprise(format!(
                "{} {} → {}: {}",
                ex.ty,
                ex.from,
                ex.to,
                rsp.reason()
            )),
        }
        Ok(())
    }

    /// Prints a delivery; `Err` if the recipient's copy is missing or its
    /// signature or exchange id header is wrong.
    /// Long: prints one delivery in the order the output reads (answer, the
    /// recipient's copy, withheld fields, reply).
    fn delivered(&self, ex: &Ex, rsp: &Rsp) -> Result<(), String> {
        let r = &rsp.json;
        let id = r.get("exchange_id").and_then(Value::as_str).unwrap_or("?");
        let status = r.get("status").and_then(Value::as_str).unwrap_or("?");
        self.out.ok(status, &format!("exchange {id}"));
        let mut result = Ok(());
        match self.d.inboxes.get(ex.to).and_then(|i| i.delivery(id)) {
            Some(got) => {
                if got.signature_valid != Some(true) {
                    result = Err(format!(
                        "{} got exchange {id} without a valid signature",
                        ex.to
                    ));
                }
                if got.exchange_id_header.as_deref() != Some(id) {
                    result = Err(format!(
                        "{} got exchange {id} without its Samgate-Exchange-Id",
                        ex.to
                    ));
                }
                let signed = match got.signature_valid {
                    Some(true) => "Samgate-Signature verified with keys/delivery.pub.pem",
                    Some(false) => "Samgate-Signature does NOT verify",
                    None => "unsigned",
                };
                self.out.line(&format!(
                    "{} received: subject {}, {signed}",
                    ex.to,
                    explain::identifier(got.body.get("subject"))
                ));
                let payload = got.body.get("payload");
                self.out.line(&format!(
                    "  fields {}",
                    explain::list(&explain::fields(payload))
                ));
                if let Some(v) = payload.and_then(|p| p.get("subject")) {
                    self.out.line(&format!(
                        "  payload /subject: {}",
                        explain::identifier(Some(v))
                    ));
                }
            }
            None => {
                self.out
                    .warn(&format!("{} has no record of this exchange", ex.to));
                result = Err(format!("{} has no record of exchange {id}", ex.to));
            }
        }
        self.withheld(
            ex.from,
            ex.to,
            ex.ty,
            ex.purpose,
            &explain::strings(r, "withheld"),
        );
        match r.get("reply") {
            Some(reply) if reply.is_object() => {
                let ty = reply.get("type").and_then(Value::as_str).unwrap_or("?");
                let p = reply.get("payload").cloned().unwrap_or(Value::Null);
                let field = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
                self.out.ok(
                    "reply",
                    &format!(
                        "{} → {}: {ty}: decision {}, suggested measure {}",
                        ex.to,
                        ex.from,
                        field("decision"),
                        field("suggested_measure")
                    ),
                );
                self.withheld(
                    ex.to,
                    ex.from,
                    ty,
                    ex.purpose,
                    &explain::strings(reply, "withheld"),
                );
            }
            _ if r.get("reply_withheld").and_then(Value::as_bool) == Some(true) => {
                self.out
                    .note("the recipient's reply was withheld: no route back");
            }
            _ => {}
        }
        result
    }

    fn withheld(&self, from: &str, to: &str, ty: &str, purpose: &str, withheld: &[String]) {
        let mut by_reason: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for w in withheld {
            by_reason
                .entry(self.explain.why(from, to, ty, purpose, w))
                .or_default()
                .push(w.clone());
        }
        for (reason, fields) in by_reason {
            self.out
                .line(&format!("withheld {}: {reason}", fields.join(", ")));
        }
    }
}
