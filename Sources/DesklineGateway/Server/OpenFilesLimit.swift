#if canImport(Glibc)
import Glibc
#endif

/// The process's limit on open files. Every connection is one, so servers (and load generators)
/// raise the soft limit to the hard limit at start: the soft limit is often 1,024.
public enum OpenFilesLimit {
    /// Raises the soft limit to the hard limit, as far as allowed; returns the limit now in force
    /// (nil where it cannot be read; `UInt64.max` when unlimited).
    @discardableResult
    public static func raiseToHardLimit() -> UInt64? {
        #if os(Linux)
        let resource = Int32(RLIMIT_NOFILE.rawValue)
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return nil }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(resource, &raised) == 0 { limit = raised }
        }
        return UInt64(limit.rlim_cur) // rlim_t.max is RLIM_INFINITY
        #else
        return nil
        #endif
    }
}
