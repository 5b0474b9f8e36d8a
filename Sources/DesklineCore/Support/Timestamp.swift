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
        return civil(seconds: s, milliseconds: Int(f)) ?? foundationFormat(seconds: s, milliseconds: Int(f))
    }

    /// The same text for years 1970-9999 without Foundation's formatter, which cost more than
    /// the rest of a pushed line (every message formats three or four of these). Days to
    /// year/month/day after H. Hinnant's `civil_from_days`.
    static func civil(seconds: Int64, milliseconds: Int) -> String? {
        guard seconds >= 0, seconds < 253_402_300_800 else { return nil } // 1970 ..< 10000
        let days = seconds / 86_400, secondOfDay = Int(seconds % 86_400)
        let z = days + 719_468
        let era = z / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = Int(dayOfYear - (153 * mp + 2) / 5 + 1)
        let month = Int(mp < 10 ? mp + 3 : mp - 9)
        let year = Int(yearOfEra + era * 400 + (month <= 2 ? 1 : 0))
        // Written into the string's own storage: one allocation, not an array and a string.
        return String(unsafeUninitializedCapacity: 24) { buffer in
            func put(_ value: Int, _ digits: Int, at offset: Int) {
                var v = value
                for i in stride(from: offset + digits - 1, through: offset, by: -1) {
                    buffer[i] = UInt8(ascii: "0") + UInt8(v % 10)
                    v /= 10
                }
            }
            put(year, 4, at: 0); buffer[4] = UInt8(ascii: "-")
            put(month, 2, at: 5); buffer[7] = UInt8(ascii: "-")
            put(day, 2, at: 8); buffer[10] = UInt8(ascii: "T")
            put(secondOfDay / 3600, 2, at: 11); buffer[13] = UInt8(ascii: ":")
            put(secondOfDay / 60 % 60, 2, at: 14); buffer[16] = UInt8(ascii: ":")
            put(secondOfDay % 60, 2, at: 17); buffer[19] = UInt8(ascii: ".")
            put(milliseconds, 3, at: 20); buffer[23] = UInt8(ascii: "Z")
            return 24
        }
    }

    /// Foundation's ISO 8601 text: the years ``civil(seconds:milliseconds:)`` does not cover, and
    /// what the tests compare it with.
    static func foundationFormat(seconds: Int64, milliseconds: Int) -> String {
        let whole = Date(timeIntervalSince1970: Double(seconds)).formatted(.iso8601) // 2026-11-25T14:54:23Z
        return whole.dropLast() + "." + String(milliseconds).leftPadded(to: 3) + "Z"
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

extension JSONEncoder.DateEncodingStrategy {
    /// How the stores write a time: ``Timestamp/format(_:)`` (ISO 8601 UTC with milliseconds).
    public static var desklineTimestamp: Self {
        .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(Timestamp.format(date))
        }
    }
}

extension JSONDecoder.DateDecodingStrategy {
    /// How the stores read a time written by ``JSONEncoder/DateEncodingStrategy/desklineTimestamp``.
    public static var desklineTimestamp: Self {
        .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let date = Timestamp.parse(text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad date '\(text)'"))
            }
            return date
        }
    }
}

extension JSONEncoder {
    /// How the stores (and `deskline export`) write a record on one line: keys sorted, `/` as it
    /// is, times as ``JSONEncoder/DateEncodingStrategy/desklineTimestamp``.
    public static func desklineRecords() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .desklineTimestamp
        return e
    }
}

extension JSONDecoder {
    /// How the stores read what ``JSONEncoder/desklineRecords()`` (or the file store's pretty
    /// printing of the same) wrote.
    public static func desklineRecords() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .desklineTimestamp
        return d
    }
}

extension Duration {
    /// The duration in seconds, as a `Double` (rates, SQL intervals, log lines).
    public var inSeconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
