fn main() -> std::process::ExitCode {
    raydeploy::cli::run()
}
