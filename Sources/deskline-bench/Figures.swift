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
