import Foundation

/// Millisecond-precision ISO 8601 UTC timestamps (`2026-11-25T14:54:23.395Z`) that round-trip
/// exactly: the form used on the wire and in the store.
public enum Timestamp {
    public static func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded(.down)) }

    public static func truncate(_ date: Date) -> Date { Date(timeIntervalSince1970: Double(milliseconds(date)) / 1000) }

    public static func format(_ date: Date) -> String {
        let ms = Int64((date.timeIntervalSince1970 * 1000).rounded())
        let (seconds, fraction) = ms.quotientAndRemainder(dividingBy: 1000)
        let (s, f) = fraction < 0 ? (seconds - 1, fraction + 1000) : (seconds, fraction)
        let whole = Date(timeIntervalSince1970: Double(s)).formatted(.iso8601) // 2026-11-25T14:54:23Z
        return whole.dropLast() + "." + String(f).leftPadded(to: 3) + "Z"
    }

    public static func parse(_ text: String) -> Date? {
        var wholePart = text
        var ms: Int64 = 0
        if let dot = text.firstIndex(of: "."), text.hasSuffix("Z") {
            let digits = text[text.index(after: dot)..<text.index(before: text.endIndex)]
            guard (1...3).contains(digits.count), let value = Int64(digits) else { return nil }
            ms = value * [1, 100, 10, 1][digits.count]
            wholePart = text[..<dot] + "Z"
        }
        guard let whole = try? Date.ISO8601FormatStyle().parse(wholePart) else { return nil }
        return Date(timeIntervalSince1970: Double(Int64(whole.timeIntervalSince1970) * 1000 + ms) / 1000)
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
