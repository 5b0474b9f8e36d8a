import DesklineCore
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
