import DesklineCore
import Logging
import Synchronization
import Foundation
import Testing

/// The follower's state machine: each tenant's events once and in order; a gap is read first.
struct EventFollowerTests {
    let acme = TenantID(rawValue: "acme")!
    let globex = TenantID(rawValue: "globex")!

    func events(_ seqs: ClosedRange<Int>, _ tenant: TenantID) -> [TicketEvent] {
        seqs.map { seq in
            TicketEvent(kind: .created, tenantId: tenant, actor: Actor(id: UserID(rawValue: "u1")!, name: "Ann", role: .customer),
                        at: Date(timeIntervalSince1970: 0), seq: seq)
        }
    }

    @Test func aFollowerStartsFromNowAndDeliversEachTenantInOrder() {
        var follower = EventFollower()
        #expect(follower.receive(events(5...6, acme)) == .deliver(events(5...6, acme)))
        #expect(follower.receive(events(1...1, globex)) == .deliver(events(1...1, globex)))
        #expect(follower.receive(events(7...9, acme)) == .deliver(events(7...9, acme)))
        #expect(follower.delivered == [acme: 9, globex: 1])
    }

    @Test func eventsAlreadyDeliveredAreDropped() {
        var follower = EventFollower(from: [acme: 6])
        #expect(follower.receive(events(5...8, acme)) == .deliver(events(7...8, acme)))
        #expect(follower.receive(events(3...8, acme)) == .deliver([]))
        #expect(follower.delivered[acme] == 8)
    }

    @Test func aGapIsReadBeforeTheBatchAfterIt() {
        var follower = EventFollower(from: [acme: 2])
        #expect(follower.receive(events(6...7, acme)) == .catchUp(acme, after: 2, through: 5))
        #expect(follower.delivered[acme] == 2) // nothing of the batch was delivered
        #expect(follower.receive(events(3...5, acme)) == .deliver(events(3...5, acme)))
        #expect(follower.receive(events(6...7, acme)) == .deliver(events(6...7, acme)))
    }

    @Test func aGapThatCannotBeReadIsSkipped() {
        var follower = EventFollower(from: [acme: 2])
        #expect(follower.receive(events(6...6, acme)) == .catchUp(acme, after: 2, through: 5))
        follower.skip(acme, through: 5)
        #expect(follower.receive(events(6...6, acme)) == .deliver(events(6...6, acme)))
    }
}

/// The follower's loop against a feed and a log it reads missed events from.
struct EventFollowerRunTests {
    let acme = TenantID(rawValue: "acme")!

    func events(_ seqs: [Int]) -> [TicketEvent] {
        seqs.map { seq in
            TicketEvent(kind: .created, tenantId: acme, actor: Actor(id: UserID(rawValue: "u1")!, name: "Ann", role: .customer),
                        at: Date(timeIntervalSince1970: 0), seq: seq)
        }
    }

    /// Runs a follower that starts after event `start` over `batches`, reading missed events
    /// from `log` (a read fails while `failing` says so); returns what it delivered and skipped.
    func follow(_ batches: [[Int]], start: Int, log: [Int], failing: @escaping @Sendable (Int) -> Bool = { _ in false }) async
        -> (delivered: [Int], skipped: [Int], reads: Int) {
        let (feed, continuation) = AsyncStream<[TicketEvent]>.makeStream()
        for batch in batches { continuation.yield(events(batch)) }
        continuation.finish()
        let logged = events(log)
        let reads = Counter()
        var delivered: [Int] = []
        var skipped: [Int] = []
        var quiet = Logger(label: "test")
        quiet.logLevel = .critical
        await EventFollower.run(feed, readingMissed: { _, after, limit throws(DesklineError) in
            let n = reads.next()
            if failing(n) { throw .storage("read \(n) fails") }
            return Array(logged.filter { ($0.seq ?? 0) > after }.prefix(limit))
        }, from: [acme: start], logger: quiet, deliver: { delivered += $0.compactMap(\.seq) }, skipped: { skipped.append($1) })
        return (delivered, skipped, reads.value)
    }

    @Test func missedEventsAreReadFromTheLogInPagesBeforeTheBatch() async {
        let result = await follow([[1_203, 1_204]], start: 2, log: Array(1...1_204))
        #expect(result.delivered == Array(3...1_204))
        #expect(result.skipped == [])
        #expect(result.reads == 3) // 1,200 missed events, 500 a read
    }

    @Test func aHoleInTheLogIsSkippedNotReadForever() async {
        // The log lacks 3-5; the feed brings 8 after 2.
        let result = await follow([[8], [9]], start: 2, log: [1, 2, 6, 7, 8, 9])
        #expect(result.delivered == [6, 7, 8, 9])
        #expect(result.skipped == [5])
        #expect(result.reads == 1)
    }

    @Test func aRangeTheLogNoLongerHoldsIsSkippedAtOnce() async {
        // Events 3-7 were pruned; the log starts at 8.
        let result = await follow([[8], [9]], start: 2, log: [8, 9])
        #expect(result.delivered == [8, 9])
        #expect(result.skipped == [7])
        #expect(result.reads == 1)
    }

    @Test func aLogThatCannotBeReadIsSkippedAfterThreeTries() async {
        let result = await follow([[6], [7]], start: 2, log: Array(1...7), failing: { _ in true })
        #expect(result.delivered == [6, 7])
        #expect(result.skipped == [5])
        #expect(result.reads == 3)
    }

    @Test func aReadThatFailsOnceIsTriedAgain() async {
        let result = await follow([[6]], start: 2, log: Array(1...6), failing: { $0 == 1 })
        #expect(result.delivered == [3, 4, 5, 6])
        #expect(result.skipped == [])
        #expect(result.reads == 2)
    }
}

/// Counts calls from a `@Sendable` closure.
final class Counter: Sendable {
    private let count = Mutex(0)
    func next() -> Int { count.withLock { $0 += 1; return $0 } }
    var value: Int { count.withLock { $0 } }
}
