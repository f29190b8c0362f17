//! Generated host bindings, one module per published major of the connector
//! contract. Published WIT versions are frozen; a new major gets a new module
//! beside this one, mapping unchanged interfaces onto the newest with `with:`.

/// `switchyard:connector@0.1.0`.
pub(crate) mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/connector@0.1.0",
        world: "connector",
        imports: { default: async },
        exports: { default: async },
    });
}

/// `switchyard:declarative@0.1.0`: the interpreter world, which is the
/// connector world plus the `spec` import. Its connector interfaces are the
/// 0.1.0 bindings above (`with:`), so one implementation of each import
/// serves both worlds, and the interpreter is instantiated and called with
/// the 0.1.0 bindings (its exports are the same `plugin` interface).
pub(crate) mod declarative_v0_1 {
    wasmtime::component::bindgen!({
        path: ["../wit/connector@0.1.0", "../wit/declarative@0.1.0"],
        world: "switchyard:declarative/interpreter",
        imports: { default: async },
        exports: { default: async },
        with: {
            "switchyard:connector/types": super::v0_1::switchyard::connector::types,
            "switchyard:connector/manifest": super::v0_1::switchyard::connector::manifest,
            "switchyard:connector/http": super::v0_1::switchyard::connector::http,
            "switchyard:connector/log": super::v0_1::switchyard::connector::log,
            "switchyard:connector/webhooks": super::v0_1::switchyard::connector::webhooks,
        },
    });
}

/// `switchyard:connector@0.2.0`: the 0.1.0 connector plus the `auth` export
/// (auth schemes added since). Its 0.1.0 interfaces are the bindings above
/// (`with:`), so a 0.2.0 component links against the same imports and is
/// called through the same `plugin` export; only `auth` is new.
pub(crate) mod v0_2 {
    wasmtime::component::bindgen!({
        path: ["../wit/connector@0.1.0", "../wit/connector@0.2.0"],
        world: "switchyard:connector/connector@0.2.0",
        imports: { default: async },
        exports: { default: async },
        with: {
            "switchyard:connector/types@0.1.0": super::v0_1::switchyard::connector::types,
            "switchyard:connector/manifest@0.1.0": super::v0_1::switchyard::connector::manifest,
            "switchyard:connector/http@0.1.0": super::v0_1::switchyard::connector::http,
            "switchyard:connector/log@0.1.0": super::v0_1::switchyard::connector::log,
            "switchyard:connector/webhooks@0.1.0": super::v0_1::switchyard::connector::webhooks,
        },
    });
}
