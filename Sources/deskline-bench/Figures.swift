import Foundation

/// Prints a line at once (also when the output is a pipe or a file).
func say(_ text: String) {
    print(text)
    fflush(nil)
}

/// Seconds since an arbitrary start, monotonic (the clock of ``nanos()``).
func now() -> Double { Double(nanos()) / 1e9 }

/// Resident set size of a process in KiB (from /proc), nil if unknown; `VmHWM` for its peak.
func residentKiB(of pid: Int32, _ field: String = "VmRSS") -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in status.split(separator: "\n") where line.hasPrefix(field + ":") {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    }
    return nil
}

/// CPU time (user and system, every thread) a process has used so far, in seconds, from
/// `/proc/<pid>/stat` (clock ticks: 10 ms); nil if unknown.
func cpuSeconds(of pid: Int32) -> Double? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return nil }
    // After the command's closing parenthesis: state (field 3) ... utime (14), stime (15).
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// CPU seconds of several processes together (nil if any is unknown).
func cpuSeconds(of pids: [Int32]) -> Double? {
    var total = 0.0
    for pid in pids {
        guard let seconds = cpuSeconds(of: pid) else { return nil }
        total += seconds
    }
    return total
}

func format(_ value: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", value) }

/// A two-column table for the terminal.
func printTable(_ title: String, _ rows: [(String, String)]) {
    let width = rows.map(\.0.count).max() ?? 0
    say("\n\(title)")
    say(String(repeating: "-", count: title.count))
    for (name, value) in rows { say(name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + value) }
}

/// This machine, for the record.
func machineDescription() -> String {
    let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
        .split(separator: "\n").first { $0.hasPrefix("model name") }?
        .split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
    let memory = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8))?
        .split(separator: "\n").first { $0.hasPrefix("MemTotal") }?
        .split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) }
    return "\(ProcessInfo.processInfo.activeProcessorCount) cores (\(cpu)), \(memory.map { "\($0 / 1_048_576) GiB" } ?? "? GiB") RAM"
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
