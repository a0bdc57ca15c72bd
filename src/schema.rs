//! Temporary stand-in until the schema branch lands.
/// Known types.
pub const KNOWN_TYPES: &[&str] = &["referral", "benefit-status", "work-capacity-assessment", "rehabilitation-plan", "attendance-report", "medical-certificate", "closure", "follow-up", "statistics-report"];
/// Stand-in.
pub struct MessageSchema;
/// Stand-in.
pub struct SchemaRegistry;
impl SchemaRegistry {
    /// Stand-in.
    pub fn builtin() -> Result<SchemaRegistry, String> { Ok(SchemaRegistry) }
    /// Stand-in.
    pub fn get(&self, _t: &str) -> Option<&MessageSchema> { None }
}
