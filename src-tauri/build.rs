fn main() {
    // Every app command is listed here, so each gets an `allow-…` permission that
    // capabilities/ grants per window. A command missing here cannot be called.
    let manifest = tauri_build::AppManifest::new().commands(keyward_commands::ALL);
    if let Err(e) = tauri_build::try_build(tauri_build::Attributes::new().app_manifest(manifest)) {
        eprintln!("tauri build step: {e:#}");
        std::process::exit(1);
    }
}

#[path = "command_names.rs"]
mod keyward_commands;
