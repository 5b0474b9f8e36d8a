@testable import DesklineCore
import Foundation
import Testing

/// The fast path of `Timestamp.format` writes exactly what Foundation's ISO 8601 formatter does.
struct TimestampFormatTests {
    @Test func civilDatesMatchFoundation() {
        var generator = SystemRandomNumberGenerator()
        var seconds: [Int64] = [0, 59, 60, 86_399, 86_400, 951_782_400, 951_868_799, 1_795_618_463, 4_107_542_399, 253_402_300_799]
        // Leap days, year and century ends, and random instants up to 9999.
        seconds += (0..<2000).map { _ in Int64.random(in: 0..<253_402_300_800, using: &generator) }
        seconds += (1970...2400).map { year in Int64(Double(year - 1970) * 365.2425 * 86_400) }
        for s in seconds {
            let ms = Int.random(in: 0...999, using: &generator)
            #expect(Timestamp.civil(seconds: s, milliseconds: ms) == Timestamp.foundationFormat(seconds: s, milliseconds: ms), "\(s)")
        }
        #expect(Timestamp.civil(seconds: -1, milliseconds: 0) == nil)
        #expect(Timestamp.civil(seconds: 253_402_300_800, milliseconds: 0) == nil)
        #expect(Timestamp.format(Date(timeIntervalSince1970: -0.5)) == Timestamp.foundationFormat(seconds: -1, milliseconds: 500))
    }
}
