//! Writes the files generated from the code: `openapi.json` (the OpenAPI
//! document the Worker serves) and `docs/errors.md` (the problem types).
//! `./x generate` runs it; unit tests fail while a committed file differs.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (path, text) in [
        (idemgate::openapi::FILE, idemgate::openapi::generate::text()),
        ("docs/errors.md", idemgate::problem_types::markdown()),
    ] {
        let file = root.join(path);
        let unchanged = std::fs::read_to_string(&file).is_ok_and(|old| old == text);
        if !unchanged {
            std::fs::write(&file, text)?;
        }
        println!(
            "{path}: {}",
            if unchanged { "unchanged" } else { "written" }
        );
    }
    Ok(())
}
