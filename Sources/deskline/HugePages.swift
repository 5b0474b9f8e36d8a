#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// `hugePages` in config.json: lets glibc's malloc ask for transparent huge pages
/// (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, glibc 2.35 and later).
///
/// Each scrypt derivation allocates its 32 MiB of working memory afresh (inside BoringSSL, so it
/// cannot be kept and reused), and reads it at random. On 4 KiB pages that costs about 8,200 page
/// faults, a TLB miss on most reads, and an `munmap` whose TLB shootdown interrupts the event
/// loops' cores; on 2 MiB pages, 16 faults. Measured here: one derivation 9,460 → 1,300-1,800
/// page faults, and about 25% more logins verified during a login storm.
///
/// The tunable is read only when a process starts, so `serve` re-executes itself once with it
/// (same pid, arguments and environment plus the tunable), before it opens anything.
enum HugePages {
    static let tunable = "glibc.malloc.hugetlb"

    /// Whether this process already runs with the tunable set (by us or by the operator).
    static var isRequested: Bool {
        (ProcessInfo.processInfo.environment["GLIBC_TUNABLES"] ?? "").contains(tunable)
    }

    /// Replaces this process with itself plus the tunable, unless it is already set. Returns
    /// only if it is, or if the re-execution failed (then the server runs on without it).
    static func restartWithHugePages() {
        #if os(Linux)
        guard !isRequested else { return }
        var environment = ProcessInfo.processInfo.environment
        let tunables = environment["GLIBC_TUNABLES"].map { $0 + ":" } ?? ""
        environment["GLIBC_TUNABLES"] = tunables + tunable + "=1"
        let arguments = CommandLine.arguments.map { strdup($0) } + [nil]
        let variables = environment.map { strdup($0.key + "=" + $0.value) } + [nil]
        execve("/proc/self/exe", arguments, variables)
        // Still here: execve failed. Nothing was opened yet, so simply go on.
        for pointer in arguments + variables { free(pointer) }
        #endif
    }
}
