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
