//! `axum-serve ADDR`: the axum example app's router (the one `host` serves
//! as `libaxum_app.so`) on `axum::serve`, on a tokio current-thread runtime:
//! what an axum author would run on one core instead of `host -w 1`, and
//! what `bench/axum.py` measures `host` against.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: axum-serve ADDR (e.g. 127.0.0.1:8000)");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("axum-serve: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        eprintln!("axum-serve listening on http://{addr}");
        axum::serve(listener, axum_app::router(0)).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("axum-serve: {e}");
            ExitCode::FAILURE
        }
    }
}
