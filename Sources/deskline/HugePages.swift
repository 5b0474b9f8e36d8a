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
    /// Set in the re-executed process: it never re-executes again, whatever glibc did with the
    /// tunable (a secure-execution process, for one, drops or ignores it).
    static let marker = "DESKLINE_REEXECUTED"

    /// Whether the kernel started this process in secure-execution mode (`AT_SECURE` in its
    /// auxiliary vector, /proc/self/auxv: pairs of native words). Unreadable counts as secure.
    static var isSecureExecution: Bool {
        guard let data = FileManager.default.contents(atPath: "/proc/self/auxv") else { return true }
        let words = data.withUnsafeBytes { Array($0.bindMemory(to: UInt.self)) }
        var i = 0
        while i + 1 < words.count, words[i] != 0 {
            if words[i] == 23 { return words[i + 1] != 0 } // AT_SECURE
            i += 2
        }
        return false
    }

    /// Replaces this process with itself plus the tunable, unless the tunable is set already (by
    /// the operator), this process is the re-executed one, or it runs in secure-execution mode
    /// (setuid or file capabilities: glibc would not honour the tunable). Returns only if it did
    /// not re-execute, or if that failed (then the server runs on without huge pages).
    static func restartWithHugePages() {
        #if canImport(Glibc)
        let current = ProcessInfo.processInfo.environment
        guard current[marker] == nil, !(current["GLIBC_TUNABLES"] ?? "").contains(tunable), !isSecureExecution else { return }
        // The environment as it is, in its order, with GLIBC_TUNABLES extended or added.
        var variables: [UnsafeMutablePointer<CChar>?] = []
        var tunables = tunable + "=1"
        var entry = environ
        while let variable = entry.pointee {
            if strncmp(variable, "GLIBC_TUNABLES=", 15) == 0 {
                let existing = String(cString: variable + 15)
                if !existing.isEmpty { tunables = existing + ":" + tunables }
            } else {
                variables.append(strdup(variable))
            }
            entry += 1
        }
        variables.append(strdup("GLIBC_TUNABLES=" + tunables))
        variables.append(strdup(marker + "=1"))
        variables.append(nil)
        let arguments = CommandLine.arguments.map { strdup($0) } + [nil]
        // The new image inherits this thread's signal mask: start it with none blocked (this may
        // be a thread that blocks signals), as a process started from a shell would.
        var none = sigset_t()
        var previous = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, &previous)
        execve("/proc/self/exe", arguments, variables)
        // Still here: execve failed. Nothing was opened yet, so simply go on.
        pthread_sigmask(SIG_SETMASK, &previous, nil)
        for pointer in arguments + variables { free(pointer) }
        #endif
    }
}
