//! The sample attester: evidence for a guest without a TEE, as upstream's sample attester makes it.

use base64::Engine;

/// Produces `{"svn":"1","report_data":"<base64>"}`, which a KBS sample verifier accepts.
#[derive(Debug, Default)]
pub struct SampleAttester;

impl SampleAttester {
    /// Evidence binding `report_data` as given: upstream neither pads nor truncates it.
    pub fn evidence(&self, report_data: &[u8]) -> Vec<u8> {
        // Standard base64 never needs JSON escaping, so formatting is exact and infallible.
        let encoded = base64::engine::general_purpose::STANDARD.encode(report_data);
        format!(r#"{{"svn":"1","report_data":"{encoded}"}}"#).into_bytes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn evidence_is_upstream_sample_json_with_unpadded_report_data() {
        let report_data: Vec<u8> = (0..48).collect();
        let evidence: serde_json::Value =
            serde_json::from_slice(&SampleAttester.evidence(&report_data)).unwrap();
        assert_eq!(evidence["svn"], "1");
        let bound = base64::engine::general_purpose::STANDARD
            .decode(evidence["report_data"].as_str().unwrap())
            .unwrap();
        assert_eq!(bound, report_data);
        assert_eq!(evidence.as_object().unwrap().len(), 2);
    }

    #[test]
    fn evidence_text_keeps_upstream_field_order() {
        assert_eq!(
            SampleAttester.evidence(b"\x01\x02\x03"),
            br#"{"svn":"1","report_data":"AQID"}"#.to_vec()
        );
        assert_ne!(SampleAttester.evidence(b"a"), SampleAttester.evidence(b"b"));
    }
}
