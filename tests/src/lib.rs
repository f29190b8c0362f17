//! Paths of the plugin components (`plugins/`, built by `build.rs`) that the end-to-end tests load.
//!
//! One constant per package of the Rust guest workspace, named after it
//! (`fixture-hostile` is [`FIXTURE_HOSTILE`]), and one per connector written
//! in another language (`plugins/shipping-py` is [`SHIPPING_PY`],
//! `plugins/woocommerce-js` is [`WOOCOMMERCE_JS`]), holding the absolute path
//! of its `.wasm` component; [`ALL`] lists them all. Building this crate
//! builds the guests, so `cargo test` always runs against current plugins.

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));

/// The path of the component built from the package `name` (for example
/// `"example"` or `"fixture-hostile"`).
pub fn by_name(name: &str) -> Option<&'static str> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, path)| *path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_component_exists() {
        assert!(ALL.len() >= 8, "{ALL:?}");
        for (name, path) in ALL {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{name}: {path}: {e}"));
            // A component, not a core module: magic, then version 0x0d and layer 1.
            assert_eq!(
                &bytes[..8],
                b"\0asm\x0d\0\x01\0",
                "{name} is not a component"
            );
        }
        assert_eq!(by_name("example"), Some(EXAMPLE));
        assert_eq!(by_name("fixture-hostile"), Some(FIXTURE_HOSTILE));
        assert_eq!(by_name("shipping-py"), Some(SHIPPING_PY));
        assert_eq!(by_name("woocommerce-js"), Some(WOOCOMMERCE_JS));
        assert_eq!(by_name("nope"), None);
    }
}
