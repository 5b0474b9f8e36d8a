@testable import DesklineGateway
import Testing

struct ConnectionStateMachineTests {
    let start = ContinuousClock.now
    let timeouts = ConnectionStateMachine.Timeouts(registration: .seconds(60), pingInterval: .seconds(120), pingTimeout: .seconds(30))

    @Test func closesWhenNobodyLogsInInTime() {
        var m = ConnectionStateMachine(timeouts: timeouts, now: start)
        #expect(m.tick(now: start + .seconds(59)) == .none)
        m.inputReceived(now: start + .seconds(30)) // typing does not extend registration
        guard case .close(let code, _) = m.tick(now: start + .seconds(60)) else {
            Issue.record("expected close")
            return
        }
        #expect(code == "REGISTRATION_TIMEOUT")
        #expect(m.tick(now: start + .seconds(61)) == .none)
    }

    @Test func aRunningLoginHoldsTheRegistrationTimeoutOffAReplyWaitingForRoomDoesNot() {
        var m = ConnectionStateMachine(timeouts: timeouts, now: start)
        let login = m.commandStarted() // a LOGIN waiting for its password check
        #expect(login)
        #expect(m.tick(now: start + .seconds(61)) == .none)
        m.commandFinished() // its outcome is ready; the reply waits for the client to read
        guard case .close(let code, _) = m.tick(now: start + .seconds(62)) else {
            Issue.record("expected close")
            return
        }
        #expect(code == "REGISTRATION_TIMEOUT")
    }

    @Test func theShutdownNoticeWaitsUntilEveryReplyIsWritten() {
        var m = ConnectionStateMachine(timeouts: timeouts, now: start)
        let started = m.commandStarted()
        m.commandFinished() // finished, its reply not all written yet
        let idle = m.requestShutdown()
        let another = m.commandStarted() // nothing new starts
        let noticeDue = m.commandAnswered() // now the notice goes out
        #expect((started, idle, another, noticeDue) == (true, false, false, true))
    }

    @Test func pingsAnIdleSessionAndDropsADeadPeer() {
        var m = ConnectionStateMachine(timeouts: timeouts, now: start)
        m.loggedIn(now: start + .seconds(1))
        #expect(m.tick(now: start + .seconds(120)) == .none)
        #expect(m.tick(now: start + .seconds(121)) == .sendPing(token: "deskline-1"))
        #expect(m.tick(now: start + .seconds(140)) == .none)
        guard case .close(let code, _) = m.tick(now: start + .seconds(151)) else {
            Issue.record("expected close")
            return
        }
        #expect(code == "PING_TIMEOUT")
    }

    @Test func anyInputAnswersThePing() {
        var m = ConnectionStateMachine(timeouts: timeouts, now: start)
        m.loggedIn(now: start)
        #expect(m.tick(now: start + .seconds(120)) == .sendPing(token: "deskline-1"))
        m.inputReceived(now: start + .seconds(125))
        #expect(m.tick(now: start + .seconds(200)) == .none)
        #expect(m.tick(now: start + .seconds(245)) == .sendPing(token: "deskline-2"))
    }

    @Test func tickIntervalFollowsTheShortestTimeout() {
        let short = ConnectionStateMachine(timeouts: .init(registration: .milliseconds(400), pingInterval: .seconds(120), pingTimeout: .seconds(30)), now: start)
        #expect(short.tickInterval == .milliseconds(100))
        #expect(ConnectionStateMachine(timeouts: timeouts, now: start).tickInterval == .seconds(1))
    }
}
