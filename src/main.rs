use std::process::ExitCode;

fn main() -> ExitCode {
    match ferry::app::run() {
        Ok(true) => ExitCode::from(ferry::app::EXIT_OK),
        Ok(false) => ExitCode::from(ferry::app::EXIT_FAILED),
        Err(failure) => failure.report(),
    }
}
