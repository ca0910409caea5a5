//! The guest's side of free page reporting: the balloon driver hands the
//! host the free blocks the guest has not reported yet, about 2 s after
//! they were freed, and the host discards them (`host-shim`'s
//! `vm::memory`). Linux 6.1 reports only free blocks of a pageblock (4 MiB
//! here, order 10, without hugetlb) and sets that when the driver
//! registers, over what the command line said; so the agent lowers it at
//! boot. Blocks of 128 KiB (order 5) take in what the boot frees in
//! pieces (the initramfs's image, the kernel's init memory): an idle
//! guest's RAM on the host went from 33 to 25 MiB. A large free is still
//! reported in large blocks; what a small order costs is more reports,
//! and a fault on the host when the guest uses such a block again.

use std::path::Path;

/// The smallest free block reported, as a page order: 2^5 pages, 128 KiB.
pub const PAGE_REPORTING_ORDER: u32 = 5;

/// The kernel's knob (`mm/page_reporting.c`'s module parameter).
const ORDER_PARAMETER: &str = "/sys/module/page_reporting/parameters/page_reporting_order";

/// Has free blocks of [`PAGE_REPORTING_ORDER`] and up reported. A kernel
/// without page reporting has no such parameter: nothing to do.
pub fn report_small_free_blocks() {
    set_order(Path::new(ORDER_PARAMETER), PAGE_REPORTING_ORDER);
}

fn set_order(parameter: &Path, order: u32) {
    if !parameter.exists() {
        return;
    }
    match std::fs::write(parameter, order.to_string()) {
        Ok(()) => debug!("free blocks of order {order} and up are reported to the host"),
        Err(e) => warn!("cannot set {}: {e}", parameter.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_is_written_where_the_kernel_has_the_parameter() {
        let dir = std::env::temp_dir().join(format!("vminitd-page-reporting-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let parameter = dir.join("page_reporting_order");
        std::fs::write(&parameter, "10\n").unwrap();
        set_order(&parameter, PAGE_REPORTING_ORDER);
        assert_eq!(std::fs::read_to_string(&parameter).unwrap(), "5");
        // No parameter (no page reporting): nothing made.
        let missing = dir.join("missing");
        set_order(&missing, PAGE_REPORTING_ORDER);
        assert!(!missing.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
