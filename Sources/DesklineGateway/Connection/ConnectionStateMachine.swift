/// The timing rules of one connection, as a pure state machine: registration timeout before
/// LOGIN, keepalive PING when a logged-in session goes quiet, and dropping a peer that does not
/// answer. The caller feeds it the current time; it never reads a clock or touches a socket.
struct ConnectionStateMachine {
    struct Timeouts {
        var registration: Duration
        var pingInterval: Duration
        var pingTimeout: Duration
    }

    enum Action: Equatable {
        case none
        /// Send `EVENT PING <token>`.
        case sendPing(token: String)
        /// Tell the client why (`EVENT ERROR <code> :<text>`) and close.
        case close(code: String, text: String)
    }

    private enum State {
        case registering(deadline: ContinuousClock.Instant)
        case active(lastInput: ContinuousClock.Instant, pingSentAt: ContinuousClock.Instant?)
        case closed
    }

    private var state: State
    private let timeouts: Timeouts
    private var pingCounter = 0

    init(timeouts: Timeouts, now: ContinuousClock.Instant) {
        self.timeouts = timeouts
        self.state = .registering(deadline: now + timeouts.registration)
    }

    /// Any line from the client counts as a sign of life.
    mutating func inputReceived(now: ContinuousClock.Instant) {
        if case .active = state { state = .active(lastInput: now, pingSentAt: nil) }
    }

    mutating func loggedIn(now: ContinuousClock.Instant) {
        if case .registering = state { state = .active(lastInput: now, pingSentAt: nil) }
    }

    mutating func closed() {
        state = .closed
    }

    mutating func tick(now: ContinuousClock.Instant) -> Action {
        switch state {
        case .registering(let deadline):
            guard now >= deadline else { return .none }
            state = .closed
            return .close(code: "REGISTRATION_TIMEOUT",
                          text: "No LOGIN within \(Self.seconds(timeouts.registration)) seconds; closing the connection.")
        case .active(let lastInput, nil):
            guard now - lastInput >= timeouts.pingInterval else { return .none }
            state = .active(lastInput: lastInput, pingSentAt: now)
            pingCounter += 1
            return .sendPing(token: "deskline-\(pingCounter)")
        case .active(_, let sentAt?):
            guard now - sentAt >= timeouts.pingTimeout else { return .none }
            state = .closed
            return .close(code: "PING_TIMEOUT",
                          text: "No reply to PING within \(Self.seconds(timeouts.pingTimeout)) seconds; closing the connection.")
        case .closed:
            return .none
        }
    }

    /// How often `tick` needs calling for the timeouts to be honoured to within ~¼ of the shortest.
    var tickInterval: Duration {
        min(.seconds(1), min(timeouts.registration, timeouts.pingInterval, timeouts.pingTimeout) / 4)
    }

    private static func seconds(_ d: Duration) -> String {
        let s = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
        return s == s.rounded() ? String(Int(s)) : String(format: "%.1f", s)
    }
}

import Foundation
