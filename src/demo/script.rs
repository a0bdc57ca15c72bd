//! The script of the story: the personas (DOMAIN §7), the consents they
//! give, and the exchanges of their paths (DOMAIN §3), built on the
//! built-in example payloads. [`super::story`] plays it.

use serde_json::{json, Value};

use super::setup::INTAKE;
use crate::clock::{Clock, SystemClock};
use crate::subject::personnummer::Personnummer;

/// Numbered steps in the whole demo (story and audit), for the progress
/// counter.
pub const STEPS: usize = 29;

/// A demo persona (DOMAIN §7; fictional, Luhn-valid numbers).
#[derive(Clone, Copy)]
pub struct Persona {
    /// First name, as the output names them.
    pub name: &'static str,
    /// Family name.
    pub family: &'static str,
    /// The identity number (never printed: see [`Persona::masked`]).
    pub number: &'static str,
}

impl Persona {
    /// `Alva (20020314-****)`.
    pub fn label(&self) -> String {
        format!("{} ({})", self.name, self.masked())
    }

    /// The masked number.
    pub fn masked(&self) -> String {
        // The demo runs on the system clock.
        Personnummer::parse_at(self.number, SystemClock.now().date())
            .map(|p| p.masked())
            .unwrap_or_else(|_| "invalid number".to_owned())
    }
}

/// Alva Exempeldotter, referred by FK.
pub const ALVA: Persona = Persona {
    name: "Alva",
    family: "Exempeldotter",
    number: "200203149828",
};
/// Nils Exempelsson, referred by the municipality; withdraws.
pub const NILS: Persona = Persona {
    name: "Nils",
    family: "Exempelsson",
    number: "200011029915",
};
/// Berit Provsson, protected identity.
pub const BERIT: Persona = Persona {
    name: "Berit",
    family: "Provsson",
    number: "198209239865",
};
/// Omar Demosson (samordningsnummer), who has given no consent here.
pub const OMAR: Persona = Persona {
    name: "Omar",
    family: "Demosson",
    number: "199905679933",
};

pub(super) const REHAB: &str = "samordnad-rehabilitering";
pub(super) const FOLLOW_UP: &str = "uppfoljning";
pub(super) const PARTIES: [&str; 5] = ["fk", "af", "kommun-kalmar", "region-kalmar", "sfk-kalmar"];

/// What a step should end in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    Delivered,
    Denied(&'static str),
}

/// One exchange of the story.
pub(super) struct Ex {
    pub(super) from: &'static str,
    pub(super) to: &'static str,
    pub(super) ty: &'static str,
    pub(super) purpose: &'static str,
    pub(super) who: Option<Persona>,
    pub(super) payload: Value,
    pub(super) expect: Expect,
    pub(super) why: &'static str,
}

pub(super) fn alva_path() -> Vec<Ex> {
    let ex = |from, to, ty, purpose, why| Ex {
        from,
        to,
        ty,
        purpose,
        who: Some(ALVA),
        payload: example(ty),
        expect: Expect::Delivered,
        why,
    };
    vec![
        referral(ALVA, "fk", "FK-REM-2025-0417"),
        ex(
            "fk",
            "sfk-kalmar",
            "benefit-status",
            REHAB,
            "FK's papers for the group meeting",
        ),
        ex(
            "kommun-kalmar",
            "fk",
            "work-capacity-assessment",
            REHAB,
            "one assessment by the team...",
        ),
        ex(
            "kommun-kalmar",
            "af",
            "work-capacity-assessment",
            REHAB,
            "...to both FK and AF",
        ),
        ex(
            "kommun-kalmar",
            "region-kalmar",
            "rehabilitation-plan",
            REHAB,
            "the team doctor's case review sees a pseudonym",
        ),
        Ex {
            why: "hours attended in the group mornings",
            ..attendance(ALVA, "af", Expect::Delivered)
        },
        Ex {
            why: "the team's monthly report to the referring officer",
            ..attendance(ALVA, "kommun-kalmar", Expect::Delivered)
        },
        ex(
            "region-kalmar",
            "fk",
            "medical-certificate",
            REHAB,
            "FK decides on benefits and gets the diagnoses",
        ),
        ex(
            "region-kalmar",
            "af",
            "medical-certificate",
            REHAB,
            "AF gets only limitations and hours",
        ),
        ex(
            "kommun-kalmar",
            "fk",
            "closure",
            REHAB,
            "closed after 10 months: studies",
        ),
        ex(
            "kommun-kalmar",
            "fk",
            "follow-up",
            FOLLOW_UP,
            "six months after closure",
        ),
    ]
}

/// A referral of `who` from `from` to the remissgrupp, built on the example.
pub(super) fn referral(who: Persona, from: &'static str, id: &str) -> Ex {
    let mut payload = example("referral");
    if let Some(o) = payload.as_object_mut() {
        // The decision fields belong to the group's reply, not the referral.
        o.remove("decision");
        o.remove("suggested_measure");
        o.insert("referral_id".into(), json!(id));
        o.insert("subject".into(), json!(who.number));
        o.insert("given_name".into(), json!(who.name));
        o.insert("family_name".into(), json!(who.family));
        if who.name == NILS.name {
            o.insert("lss_decision".into(), json!(true));
            o.insert("reason_for_referral".into(), json!("Aktivitetsersättning and daglig verksamhet under LSS; wants to try work training."));
        }
        if who.name == BERIT.name {
            o.insert(
                "income_source".into(),
                json!(["sjukpenning", "forsorjningsstod"]),
            );
            o.insert("diagnosis_documented".into(), json!(false));
        }
    }
    Ex {
        from,
        to: INTAKE,
        ty: "referral",
        purpose: REHAB,
        who: Some(who),
        payload,
        expect: Expect::Delivered,
        why: "the referral to the remissgrupp, which answers with its decision",
    }
}

pub(super) fn attendance(who: Persona, from: &'static str, expect: Expect) -> Ex {
    Ex {
        from,
        to: "fk",
        ty: "attendance-report",
        purpose: REHAB,
        who: Some(who),
        payload: example("attendance-report"),
        expect,
        why: "",
    }
}

/// The built-in example payload of a type (an empty object if missing).
pub(super) fn example(ty: &str) -> Value {
    crate::schema::builtin_example(ty)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_else(|| json!({}))
}
