mod app;
fn main() {
    let spec: app::AppSpec = std::env::args().nth(1).unwrap().parse().unwrap();
    match app::load(&spec) {
        Ok(m) => {
            let info = app_sdk::abi::WorkerInfo { worker_id: 1, pid: 1, app_name: "app".into() };
            let r = (m.init())(&info);
            println!("loaded ok: init ok={}", r.is_ok());
        }
        Err(e) => println!("error: {e}"),
    }
}
