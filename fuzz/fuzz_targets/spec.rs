//! Fuzzes what a user sends to envstore as an environment spec: parsing
//! (YAML or JSON), canonicalisation through a channel allowlist, the hash
//! and the exports of the canonical form; plus the small text parsers for
//! channels and namespace names.
//!
//! The first input byte picks the format (even: YAML, odd: JSON); the rest
//! is the spec body. Parsing may fail, but must not panic, hang or blow
//! memory; whatever parses and canonicalises must satisfy the invariants
//! asserted below.

#![no_main]

use envstore_core::spec::MAX_SPEC_BYTES;
use envstore_core::{
    CanonicalSpec, ChannelAllowlist, EnvironmentSpec, NamedChannel, NamespaceName, SpecFormat,
};
use libfuzzer_sys::fuzz_target;
use rattler_conda_types::Subdir;

fn allowlist() -> ChannelAllowlist {
    ChannelAllowlist::new(vec![
        NamedChannel::parse("demo=http://127.0.0.1:9/demo").expect("demo channel parses"),
        NamedChannel::parse("extra=file:///srv/extra").expect("extra channel parses"),
    ])
}

fuzz_target!(|data: &[u8]| {
    // The small text parsers see the whole input as text.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = NamedChannel::parse(text);
        let _ = text.parse::<NamespaceName>();
        let _ = allowlist().resolve(text);
    }

    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let format = if selector % 2 == 0 {
        SpecFormat::Yaml
    } else {
        SpecFormat::Json
    };
    let Ok(spec) = EnvironmentSpec::parse(body, format) else {
        return;
    };

    // What parsed is no bigger than what a body at the size limit can spell
    // out: YAML aliases must not multiply it (they never shrink text, and
    // escapes only ever shrink it).
    let text: usize = spec.name.as_ref().map_or(0, String::len)
        + spec.channels.iter().map(String::len).sum::<usize>()
        + spec
            .variables
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum::<usize>();
    assert!(
        text <= MAX_SPEC_BYTES,
        "a {}-byte body parsed into {text} bytes of text",
        body.len()
    );

    let allowlist = allowlist();
    let Ok(canonical) = spec.canonicalize(&allowlist, Subdir::Linux64) else {
        return;
    };

    // The canonical form survives its own JSON.
    let json = canonical.to_json();
    assert!(!json.is_empty(), "the canonical form serialises");
    let back: CanonicalSpec = serde_json::from_str(&json).expect("canonical JSON parses back");
    assert_eq!(back, canonical, "canonical JSON round-trips: {json}");

    // Canonicalisation is deterministic.
    let again = spec
        .canonicalize(&allowlist, Subdir::Linux64)
        .expect("canonicalising twice succeeds");
    assert_eq!(
        again.hash(),
        canonical.hash(),
        "canonicalising twice gives one hash"
    );

    // Every canonical dependency is a valid match spec again.
    let match_specs = canonical.match_specs();
    assert!(
        match_specs.is_ok(),
        "canonical dependencies re-parse: {:?} -> {match_specs:?}",
        canonical.dependencies
    );

    // The exported environment.yml is a spec that means the same environment.
    let yaml = canonical.to_environment_yaml("x");
    let reparsed = EnvironmentSpec::parse(yaml.as_bytes(), SpecFormat::Yaml)
        .unwrap_or_else(|error| panic!("exported YAML parses: {error}\n{yaml}"));
    let recanonical = reparsed
        .canonicalize(&allowlist, Subdir::Linux64)
        .unwrap_or_else(|error| panic!("exported YAML canonicalises: {error}\n{yaml}"));
    assert_eq!(
        recanonical, canonical,
        "exported YAML canonicalises to the same spec\n{yaml}"
    );
    assert_eq!(recanonical.hash(), canonical.hash());
});
