//! The `ferry` binary: everything is in the library (`ferry::main`).

fn main() -> std::process::ExitCode {
    ferry::main()
}
