//! docker drives `vminitd-runtime` (registered as `vminitd` in the
//! daemon's daemon.json) as it drives runc: the same smoke tests as
//! podman's, each against a dockerd the test starts by hand (its own data
//! root, exec root, Unix socket, bridge and address pool; see
//! `vminitd_tests::engines::Docker`), with runc and with vminitd.

mod smoke;

smoke::with_each_runtime!(vminitd_tests::engines::Docker:
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
