//! JSON canonicalisation (RFC 8785, JCS) of the runtime data the report data is hashed over.

use serde_json::Value;

/// Serialises `value` canonically: object members sorted by the UTF-16 code units of their
/// names, no insignificant whitespace, strings escaped the way JCS prescribes.
pub(super) fn to_canonical_string(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        // Limitation: floats use serde_json's shortest form, which differs from the ECMAScript
        // number format JCS requires for some exponents; the hashed runtime data has no numbers.
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            sorted.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, (name, member)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(name, out);
                out.push(':');
                write_value(member, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_members_and_drops_whitespace() {
        let value = json!({
            "tee-pubkey": {"y": "2", "x": "1", "kty": "EC"},
            "nonce": "n",
            "additional-evidence": "",
        });
        assert_eq!(
            to_canonical_string(&value),
            r#"{"additional-evidence":"","nonce":"n","tee-pubkey":{"kty":"EC","x":"1","y":"2"}}"#
        );
    }

    #[test]
    fn sorts_by_utf16_code_units_not_bytes() {
        // U+1F600 sorts after U+FB01 by UTF-8 bytes but before it by UTF-16 (a surrogate pair).
        let value = json!({"\u{FB01}": 2, "\u{1F600}": 1});
        assert_eq!(
            to_canonical_string(&value),
            "{\"\u{1F600}\":1,\"\u{FB01}\":2}"
        );
    }

    #[test]
    fn escapes_like_jcs() {
        let value = json!([
            "a\"b\\c\u{8}\u{c}\n\r\t\u{1}\u{7f}é",
            null,
            true,
            false,
            10,
            -3
        ]);
        assert_eq!(
            to_canonical_string(&value),
            "[\"a\\\"b\\\\c\\b\\f\\n\\r\\t\\u0001\u{7f}é\",null,true,false,10,-3]"
        );
    }
}
