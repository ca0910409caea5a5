//! podman drives `vminitd-runtime` as it drives runc: each test runs the
//! same commands on the same image (busybox, loaded from an archive) with
//! runc and with vminitd, in a podman of its own (storage, run directory,
//! networks and volumes in a scratch directory; see
//! `vminitd_tests::engines::Podman`), and checks what a user sees: output,
//! exit codes, the terminal, logs, files through volumes, a published
//! port, names on a network; then that nothing is left on the host.

mod smoke;

smoke::with_each_runtime!(vminitd_tests::engines::Podman:
    echo_hi_and_the_kernel,
    exit_codes,
    environment_directory_and_user,
    a_terminal_with_its_window_size,
    detached_logs_exec_stop_and_rm,
    volumes_and_binds,
    a_published_port,
    two_containers_by_name_on_a_network,
    no_network_but_loopback,
);
