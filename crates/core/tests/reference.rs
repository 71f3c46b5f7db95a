//! The operators' configuration reference (`docs/configuration.md`) names every key the
//! configuration has, and no key it does not have.

use std::collections::BTreeSet;

use boxless_core::config::{Config, DEFAULT_CONFIG};
use serde_json::Value;

/// Keys whose value is a map of the operator's own keys: documented as one key.
const MAPS: &[&str] = &["numbering.language_by_country"];

/// Every key of `v` below `prefix`: `table.key`, `array[].key` for arrays of tables.
/// `leaves` gets the keys that hold a value rather than a table.
fn walk(prefix: &str, v: &Value, all: &mut BTreeSet<String>, leaves: &mut BTreeSet<String>) {
    let Value::Object(m) = v else { return };
    for (k, v) in m {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        all.insert(path.clone());
        match v {
            Value::Object(_) if !MAPS.contains(&path.as_str()) => walk(&path, v, all, leaves),
            Value::Array(a) if a.first().is_some_and(Value::is_object) => {
                walk(&format!("{path}[]"), &a[0], all, leaves)
            }
            _ => {
                leaves.insert(path);
            }
        }
    }
}

#[test]
fn config_reference_names_every_key() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    // The embedded default, with one token so that a token's keys are walked too. Keys
    // whose default is "none" serialize as null and are walked all the same.
    let text = format!(
        "{DEFAULT_CONFIG}\n[[http.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nscope = \"admin\"\n",
        "0".repeat(64)
    );
    let config: Config = toml::from_str(&text).expect("the default parses");
    let value = serde_json::to_value(&config).expect("serializes");
    let (mut all, mut leaves) = (BTreeSet::new(), BTreeSet::new());
    walk("", &value, &mut all, &mut leaves);
    assert!(leaves.len() > 80, "walked only {leaves:?}");

    let missing: Vec<_> = leaves
        .iter()
        .filter(|k| !doc.contains(&format!("| `{k}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md has no row for {missing:?}: add one (default, what it does, what it protects)"
    );
    // And no row for a key that does not exist (a renamed or removed one).
    let stale: Vec<_> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .filter(|k| !all.contains(*k))
        .collect();
    assert!(
        stale.is_empty(),
        "docs/configuration.md names keys the config does not have: {stale:?}"
    );
}

#[test]
fn a_serialized_config_shows_no_secret() {
    let config: Config =
        toml::from_str("[sms]\npassword = \"hunter2\"\n[control]\npassword = \"hunter3\"\n")
            .expect("parses");
    let json = serde_json::to_string(&config).unwrap();
    assert!(!json.contains("hunter"), "{json}");
    assert_eq!(json.matches("\"***\"").count(), 2, "{json}");
}
