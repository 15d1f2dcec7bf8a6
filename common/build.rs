//! Generates the ttrpc (and, with `grpc`, tonic) code of the wire API.

use std::path::PathBuf;

const PROTOS: [&str; 2] = [
    "protos/attestation-agent/attestation-agent.proto",
    "protos/confidential-data-hub/api.proto",
];
const INCLUDES: [&str; 2] = ["protos/attestation-agent", "protos/confidential-data-hub"];

fn main() -> std::io::Result<()> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").map_err(std::io::Error::other)?);
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    let ttrpc_dir = out_dir.join("ttrpc");
    std::fs::create_dir_all(&ttrpc_dir)?;
    ttrpc_codegen_prost::Codegen::new()
        .out_dir(&ttrpc_dir)
        .inputs(PROTOS)
        .includes(INCLUDES)
        .prost()
        .customize(ttrpc_codegen_prost::Customize {
            async_all: true,
            ..Default::default()
        })
        .run()?;

    #[cfg(feature = "grpc")]
    {
        // The messages come from the ttrpc output; tonic adds only its services.
        let grpc_dir = out_dir.join("grpc");
        std::fs::create_dir_all(&grpc_dir)?;
        tonic_build::configure()
            .out_dir(&grpc_dir)
            .extern_path(
                ".attestation_agent",
                "crate::wire::ttrpc::attestation_agent",
            )
            .extern_path(".api", "crate::wire::ttrpc::api")
            .compile_protos(&PROTOS, &INCLUDES)?;
    }
    Ok(())
}
