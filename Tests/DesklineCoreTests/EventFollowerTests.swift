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

/// The live follower against a store's batches and a log it reads missed events from.
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
        let logged = events(log)
        let reads = Counter()
        let delivered = Mutex<[Int]>([])
        let skipped = Mutex<[Int]>([])
        var quiet = Logger(label: "test")
        quiet.logLevel = .critical
        let follower = LiveEventFollower(readingMissed: { _, after, limit throws(DesklineError) in
            let n = reads.next()
            if failing(n) { throw .storage("read \(n) fails") }
            return Array(logged.filter { ($0.seq ?? 0) > after }.prefix(limit))
        }, from: [acme: start], logger: quiet, deliver: { events in delivered.withLock { $0 += events.compactMap(\.seq) } },
           skipped: { _, through in skipped.withLock { $0.append(through) } })
        for batch in batches { follower.receive(events(batch)) }
        await follower.settled()
        return (delivered.withLock { $0 }, skipped.withLock { $0 }, reads.value)
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

    @Test func aBatchWithoutAGapIsHandedOnBeforeReceiveReturns() {
        let delivered = Mutex<[Int]>([])
        let follower = LiveEventFollower(readingMissed: { _, _, _ throws(DesklineError) in [] }, from: [acme: 2], logger: Logger(label: "test"),
                                         deliver: { events in delivered.withLock { $0 += events.compactMap(\.seq) } })
        follower.receive(events([3, 4]))
        #expect(delivered.withLock { $0 } == [3, 4])
        follower.receive(events([4, 5]))
        #expect(delivered.withLock { $0 } == [3, 4, 5])
    }

    @Test func batchesThatComeDuringAReadWaitBehindItAndOtherTenantsDoNot() async throws {
        let globex = TenantID(rawValue: "globex")!
        let logged = events(Array(1...8))
        let open = Mutex(false)
        let delivered = Mutex<[String]>([])
        let follower = LiveEventFollower(readingMissed: { _, after, limit throws(DesklineError) in
            while !open.withLock({ $0 }) { try? await Task.sleep(for: .milliseconds(1)) }
            return Array(logged.filter { ($0.seq ?? 0) > after }.prefix(limit))
        }, from: [acme: 2], logger: Logger(label: "test"), deliver: { events in
            delivered.withLock { $0 += events.map { "\($0.tenantId.rawValue) \($0.seq ?? 0)" } }
        })
        follower.receive(events([6]))
        follower.receive(events([7, 8]))
        var other = events([1])
        other[0].tenantId = globex
        follower.receive(other)
        #expect(delivered.withLock { $0 } == ["globex 1"]) // acme's wait for the read
        open.withLock { $0 = true }
        await follower.settled()
        #expect(delivered.withLock { $0 } == ["globex 1"] + (3...8).map { "acme \($0)" })
    }

    @Test(.timeLimit(.minutes(1)))
    func aStoppedFollowerHandsNothingOnNotEvenWhatItsReadFound() async throws {
        let delivered = Mutex<[Int]>([])
        let started = Mutex(false), open = Mutex(false)
        let logged = events(Array(1...6))
        let follower = LiveEventFollower(readingMissed: { _, after, limit throws(DesklineError) in
            started.withLock { $0 = true }
            // Finds the events, but only after stop().
            while !open.withLock({ $0 }) { try? await Task.sleep(for: .milliseconds(1)) }
            return Array(logged.filter { ($0.seq ?? 0) > after }.prefix(limit))
        }, from: [acme: 2], logger: Logger(label: "test"), deliver: { events in delivered.withLock { $0 += events.compactMap(\.seq) } })
        follower.receive(events([6]))
        while !started.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(1)) }
        follower.stop()
        open.withLock { $0 = true }
        follower.receive(events([3]))
        await follower.settled()
        #expect(delivered.withLock { $0 } == [])
    }

    @Test func tenantsFedFromSeveralThreadsAtOnceGetEachOfTheirEventsOnceAndInOrder() async {
        let tenants = (1...4).map { TenantID(rawValue: "t\($0)")! }
        // Each tenant's log has 1...400; the follower starts after 100 for each. Four threads
        // feed a tenant each, at once; one tenant's gaps are read meanwhile.
        let delivered = Mutex<[TenantID: [Int]]>([:])
        let follower = LiveEventFollower(readingMissed: { tenant, after, limit throws(DesklineError) in
            (after + 1...min(after + limit, 400)).map { seq in
                TicketEvent(kind: .created, tenantId: tenant, actor: Actor(id: UserID(rawValue: "u1")!, name: "Ann", role: .customer),
                            at: Date(timeIntervalSince1970: 0), seq: seq)
            }
        }, from: Dictionary(uniqueKeysWithValues: tenants.map { ($0, 100) }), logger: Logger(label: "test"), deliver: { events in
            delivered.withLock { $0[events[0].tenantId, default: []] += events.compactMap(\.seq) }
        })
        await withTaskGroup(of: Void.self) { group in
            for (i, tenant) in tenants.enumerated() {
                group.addTask {
                    var seq = 101
                    while seq <= 400 {
                        // The fourth tenant misses some batches (never its last): those come from the log.
                        let size = 1 + (seq % 5)
                        let batch = (seq..<min(seq + size, 401)).map { n in
                            TicketEvent(kind: .created, tenantId: tenant, actor: Actor(id: UserID(rawValue: "u1")!, name: "Ann", role: .customer),
                                        at: Date(timeIntervalSince1970: 0), seq: n)
                        }
                        if i != 3 || seq % 7 != 0 || seq + size > 400 { follower.receive(batch) }
                        seq += size
                    }
                }
            }
        }
        await follower.settled()
        let all = delivered.withLock { $0 }
        for tenant in tenants { #expect(all[tenant] == Array(101...400), "\(tenant.rawValue): \(all[tenant]?.count ?? 0) events, the last \(all[tenant]?.last ?? 0)") }
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
