//! Swedish words for the console: categories with a plain explanation,
//! purposes, methods, states, message types, audit actions and decisions,
//! and the payload field names of the schemas (for the register extract).
//! Unknown codes are shown as they are (never an error).

use crate::audit::record::{Action, Decision};
use crate::schema::Category;

/// A category's Swedish label and a plain explanation for the participant.
pub fn category(c: Category) -> (&'static str, &'static str) {
    match c {
        Category::Case => (
            "Ärendeuppgifter",
            "Uppgifter om själva ärendet: ärendenummer, datum, perioder och var i processen du är.",
        ),
        Category::Identity => ("Identitet", "Vem du är: personnummer och namn."),
        Category::Contact => (
            "Kontaktuppgifter",
            "Hur man når dig: adress, telefonnummer och kommun.",
        ),
        Category::Benefit => (
            "Ersättning",
            "Vilken ersättning du har och för vilken period, till exempel sjukpenning, aktivitetsersättning eller försörjningsstöd.",
        ),
        Category::Employment => (
            "Arbete och arbetsförmåga",
            "Ditt arbete, din arbetsförmåga och dina ärenden hos Arbetsförmedlingen.",
        ),
        Category::Education => ("Utbildning", "Din skolgång och dina studier."),
        Category::Attendance => (
            "Närvaro",
            "Hur mycket du har deltagit i planerade insatser och scheman.",
        ),
        Category::Health => (
            "Hälsa",
            "Uppgifter om din hälsa, till exempel läkarutlåtanden och funktionsnedsättningar. Känsliga personuppgifter.",
        ),
        Category::SocialServices => (
            "Socialtjänst",
            "Dina ärenden hos socialtjänsten, till exempel beslut om försörjningsstöd, daglig verksamhet eller LSS.",
        ),
        Category::Outcome => (
            "Resultat",
            "Beslut, mål och resultat av insatserna, till exempel om du har fått arbete eller börjat studera.",
        ),
        Category::FreeText => (
            "Fritext",
            "Fria anteckningar. De skickas bara där en regel uttryckligen tillåter just det fältet.",
        ),
    }
}

/// A category code's label (the code itself when unknown).
pub fn category_code(code: &str) -> String {
    Category::ALL
        .iter()
        .find(|c| c.as_str() == code)
        .map_or_else(|| code.to_owned(), |c| category(*c).0.to_owned())
}

/// A purpose's Swedish label.
pub fn purpose(p: &str) -> String {
    match p {
        "samordnad-rehabilitering" => "Samordnad rehabilitering".into(),
        "uppfoljning" => "Uppföljning".into(),
        "statistik" => "Statistik".into(),
        other => other.into(),
    }
}

/// The consent methods the form offers, with labels.
pub const METHODS: [(&str, &str); 3] = [
    ("written", "Skriftligt, med underskrift"),
    ("bankid", "Med BankID"),
    ("oral-documented", "Muntligt, dokumenterat av handläggaren"),
];

/// A method's label.
pub fn method(m: &str) -> String {
    label_in(&METHODS, m)
}

/// The label of `code` in a table of (code, label), the code itself when
/// the table lacks it.
fn label_in(table: &[(&str, &str)], code: &str) -> String {
    table
        .iter()
        .find(|(k, _)| *k == code)
        .map_or_else(|| code.to_owned(), |(_, v)| (*v).to_owned())
}

/// Representatives (DESIGN §13 `given_by.role`).
pub const GIVEN_BY: [(&str, &str); 4] = [
    ("guardian", "Vårdnadshavare"),
    ("god-man", "God man"),
    ("forvaltare", "Förvaltare"),
    ("fullmakt", "Ombud med fullmakt"),
];

/// A representative role's label.
pub fn given_by(r: &str) -> String {
    label_in(&GIVEN_BY, r)
}

/// A consent state's label.
pub fn state(s: &str) -> String {
    match s {
        "active" => "Giltigt".into(),
        "revoked" => "Återkallat".into(),
        "expired" => "Har gått ut".into(),
        "not_yet_valid" => "Ännu inte giltigt".into(),
        "closed" => "Avslutat, gäller för uppföljning".into(),
        other => other.into(),
    }
}

/// What the protected-identity marking (DESIGN §13) means, on the consent
/// page and the receipt.
pub const PROTECTED_IDENTITY: &str =
    "Ja. Deltagarens adress, telefonnummer och kommun lämnas aldrig ut, vad samtycket och \
     rutten än säger.";

/// What a closure (DESIGN §13) left of the consent: `closed` and `until`
/// are dates, `follow_up` whether the consent names the purpose
/// `uppfoljning`.
pub fn closure(closed: &str, until: &str, follow_up: bool) -> String {
    if follow_up {
        format!(
            "Samverkan avslutades {closed}. Samtycket gäller sedan dess bara för uppföljning, \
             till och med {until}."
        )
    } else {
        format!(
            "Samverkan avslutades {closed}. Samtycket omfattar inte uppföljning och gäller \
             inte för nya utbyten, utom besked om avslutet till de andra parterna."
        )
    }
}

/// A purpose's label on a closed consent: the ones the closure ended say so.
pub fn purpose_after(p: &str, closed: bool) -> String {
    if closed && p != crate::consent::lifecycle::FOLLOW_UP_PURPOSE {
        format!("{} (upphörde vid avslutet)", purpose(p))
    } else {
        purpose(p)
    }
}

/// A message type's label ("what kind of information").
pub fn msg_type(t: &str) -> String {
    match t {
        "referral" => "Remiss".into(),
        "benefit-status" => "Uppgifter om ersättning".into(),
        "work-capacity-assessment" => "Bedömning av arbetsförmåga".into(),
        "rehabilitation-plan" => "Rehabiliteringsplan".into(),
        "attendance-report" => "Närvarorapport".into(),
        "medical-certificate" => "Läkarutlåtande".into(),
        "closure" => "Avslut".into(),
        "follow-up" => "Uppföljning efter avslut".into(),
        "statistics-report" => "Statistikrapport".into(),
        "consent-revoked" => "Meddelande om återkallat samtycke".into(),
        other => other.into(),
    }
}

/// An audit action's label (a name that is no [`Action`] is shown as it is).
pub fn action(a: &str) -> String {
    a.parse()
        .map_or_else(|_| a.to_owned(), |a| action_word(a).to_owned())
}

/// The Swedish words for an audit action.
pub fn action_word(a: Action) -> &'static str {
    match a {
        Action::ExchangeForwarded => "Utbyte vidarebefordrat",
        Action::ExchangeDenied => "Utbyte nekat",
        Action::ExchangeDelivered => "Utbyte levererat",
        Action::ExchangeFailed => "Utbyte misslyckades",
        Action::ReplyForwarded => "Svar vidarebefordrat",
        Action::ReplyWithheld => "Svar undanhållet",
        Action::ConsentRecorded => "Samtycke registrerat",
        Action::ConsentRevoked => "Samtycke återkallat",
        Action::Reidentified => "Återidentifiering",
        Action::AuditQuery => "Granskningsfråga",
        Action::Disclosure => "Registerutdrag",
        Action::RevocationNotified => "Återkallelse meddelad",
    }
}

/// A decision's label (a name that is no [`Decision`] is shown as it is).
pub fn decision(d: &str) -> String {
    d.parse()
        .map_or_else(|_| d.to_owned(), |d| decision_word(d).to_owned())
}

/// The Swedish word for a decision.
pub fn decision_word(d: Decision) -> &'static str {
    match d {
        Decision::Permit => "Tillåtet",
        Decision::Deny => "Nekat",
        Decision::Delivered => "Levererat",
        Decision::Failed => "Misslyckades",
        Decision::Expired => "Gick ut",
    }
}

/// A payload field (a JSON Pointer such as `/attended_hours`) in words.
pub fn field(pointer: &str) -> String {
    let name = pointer.trim_start_matches('/');
    let top = name.split('/').next().unwrap_or(name);
    field_word(top).map_or_else(|| top.replace('_', " "), str::to_owned)
}

/// The Swedish word of a top-level payload field name, if known.
/// Long: one flat table of payload field names and their Swedish words.
fn field_word(top: &str) -> Option<&'static str> {
    let word = match top {
        "absence_reason_category" => "orsak till frånvaro",
        "active" => "aktiva deltagare",
        "activity_limitations" => "aktivitetsbegränsningar",
        "address" => "adress",
        "af_programme" => "program hos Arbetsförmedlingen",
        "af_registration_status" => "inskrivning hos Arbetsförmedlingen",
        "age_band" => "åldersgrupp",
        "assessed_by_role" => "bedömd av",
        "assessment_date" => "datum för bedömningen",
        "attended_hours" => "närvarande timmar",
        "benefit_type" => "typ av ersättning",
        "certificate_id" => "utlåtandets nummer",
        "clinical_notes" => "journalanteckningar",
        "closed" => "avslutade deltagare",
        "closure_date" => "datum för avslut",
        "closure_reason" => "orsak till avslut",
        "contact_made" => "om kontakt togs",
        "current_activity" => "nuvarande sysselsättning",
        "daily_activity_basis" => "grund för daglig verksamhet",
        "daily_structure" => "dagliga rutiner",
        "decision" => "beslut",
        "diagnosis_codes" => "diagnoskoder",
        "diagnosis_documented" => "om diagnos är dokumenterad",
        "dormant" => "vilande deltagare",
        "education_history" => "tidigare utbildning",
        "enrolment_date" => "datum för inskrivning",
        "extent" => "omfattning",
        "family_name" => "efternamn",
        "follow_up_date" => "datum för uppföljning",
        "functional_limitations" => "funktionsnedsättningar",
        "further_care_needed" => "behov av fortsatt vård",
        "further_investigation" => "fortsatt utredning",
        "future_plan" => "planering framåt",
        "gender" => "kön",
        "given_name" => "förnamn",
        "goal" => "mål",
        "health_summary" => "sammanfattning av hälsan",
        "highest_education" => "högsta utbildning",
        "hours_per_week" => "timmar per vecka",
        "housing_situation" => "boendesituation",
        "income_source" => "försörjning",
        "income_source_at_entry" => "försörjning vid inskrivning",
        "issued_date" => "utfärdandedatum",
        "lss_decision" => "beslut enligt LSS",
        "mean_duration_months" => "genomsnittlig tid i månader",
        "months_after_closure" => "månader efter avslut",
        "municipality" => "kommun",
        "network_meeting_dates" => "datum för nätverksmöten",
        "notes" => "anteckningar",
        "ordinary_measures_tried" => "prövade ordinarie insatser",
        "outcome" => "resultat",
        "outcome_detail" => "resultat i detalj",
        "own_goal" => "eget mål",
        "participant_accepted" => "om deltagaren har godkänt",
        "period" => "period",
        "period_end" => "periodens slut",
        "period_start" => "periodens början",
        "phone" => "telefonnummer",
        "plan_date" => "datum för planen",
        "plan_version" => "planens version",
        "prognosis" => "prognos",
        "reason_for_referral" => "anledning till remissen",
        "receiving_party" => "mottagande part",
        "recommended_hours_per_week" => "rekommenderade timmar per vecka",
        "referral_date" => "datum för remissen",
        "referral_id" => "remissens nummer",
        "registered_at_af" => "inskriven hos Arbetsförmedlingen",
        "review_dates" => "datum för avstämningar",
        "scheduled_hours" => "planerade timmar",
        "self_supporting" => "självförsörjande",
        "social_situation" => "social situation",
        "stage" => "skede",
        "started" => "påbörjade deltagare",
        "status_date" => "datum för uppgiften",
        "study_activities" => "studieinsatser",
        "sub_goals" => "delmål",
        "subject" => "personnummer",
        "suggested_measure" => "föreslagen insats",
        "suitable_tasks" => "lämpliga arbetsuppgifter",
        "sustainable_hours_per_week" => "hållbara timmar per vecka",
        "treatment_activities" => "behandlingsinsatser",
        "variant" => "variant",
        "work_activities" => "arbetsinriktade insatser",
        "work_history" => "tidigare arbeten",
        _ => return None,
    };
    Some(word)
}

/// A problem code in plain Swedish, for form errors.
pub fn problem(code: &str) -> &'static str {
    match code {
        "invalid_personnummer" => {
            "Personnumret är inte giltigt. Kontrollera datum och kontrollsiffra."
        }
        "invalid_consent_claims" => {
            "Samtycket kunde inte registreras: uppgifterna hänger inte ihop (se detaljen nedan)."
        }
        "consent_replayed" => "Samtycket är redan registrerat.",
        "consent_signature" | "unknown_issuer" => {
            "Samtycket kunde inte signeras av konsolen. Kontakta förvaltningen."
        }
        "forbidden_role" => "Du har inte behörighet för den här åtgärden.",
        "not_found" => "Uppgiften finns inte.",
        "unavailable" => {
            "Databasen kan inte nås just nu. Inget har sparats. Försök igen om en stund."
        }
        "rate_limited" => "För många förfrågningar just nu. Vänta en stund och försök igen.",
        "invalid_envelope" | "malformed_json" => "Formuläret innehöll felaktiga uppgifter.",
        "payload_too_large" => "Formuläret är för stort.",
        _ => "Något gick fel. Inget har ändrats. Försök igen eller kontakta förvaltningen.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The extract must speak words, not identifiers: every top-level field
    /// of every schema has a Swedish word, every type a label.
    #[test]
    fn every_schema_field_and_type_has_swedish_words() {
        let registry = crate::schema::SchemaRegistry::builtin().unwrap();
        for t in crate::schema::KNOWN_TYPES.iter() {
            let schema = registry.get(t).unwrap();
            for pointer in schema.fields().keys() {
                let top = pointer.trim_start_matches('/').split('/').next().unwrap();
                assert!(
                    field_word(top).is_some(),
                    "field {pointer} of {t} has no Swedish word"
                );
            }
            assert_ne!(msg_type(t), *t, "type {t} has no Swedish label");
        }
        for c in Category::ALL {
            assert_ne!(category_code(c.as_str()), c.as_str());
        }
    }
}
