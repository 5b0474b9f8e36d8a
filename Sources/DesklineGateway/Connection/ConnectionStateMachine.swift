/// The timing rules of one connection, as a pure state machine: registration timeout before
/// LOGIN, keepalive PING when a logged-in session goes quiet, and dropping a peer that does not
/// answer. The caller feeds it the current time; it never reads a clock or touches a socket.
struct ConnectionStateMachine {
    /// A class: every session of a server shares one (a connection keeps a reference, not
    /// three durations).
    final class Timeouts: Sendable {
        let registration: Duration
        let pingInterval: Duration
        let pingTimeout: Duration

        init(registration: Duration, pingInterval: Duration, pingTimeout: Duration) {
            self.registration = registration
            self.pingInterval = pingInterval
            self.pingTimeout = pingTimeout
        }
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
    /// Commands started whose outcome is not ready yet (more than one while pipelining commands
    /// wait for their writes; a LOGIN waiting for its password check among them).
    private var commandsRunning = 0
    /// Commands started whose reply is not all written yet: a finished command's reply may wait
    /// behind an earlier one's, or for a client that does not read.
    private var commandsUnanswered = 0
    /// The server is shutting down; no new command may start.
    private(set) var shutdownRequested = false

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

    /// A command is about to run. Returns false if the server is shutting down: the session
    /// has been (or is about to be) told, and must not start anything new.
    mutating func commandStarted() -> Bool {
        guard !shutdownRequested else { return false }
        commandsRunning += 1
        commandsUnanswered += 1
        return true
    }

    /// A command's outcome is ready (its reply may still have to wait before it is written).
    mutating func commandFinished() {
        commandsRunning -= 1
    }

    /// A command's reply is all written. Returns true if shutdown was requested meanwhile and
    /// this was the last unanswered command: the session must now send the shutdown notice and
    /// close.
    mutating func commandAnswered() -> Bool {
        commandsUnanswered -= 1
        return shutdownRequested && commandsUnanswered == 0
    }

    /// The server is shutting down. Returns true if the session is idle and can be told and
    /// closed right away; false if commands are unanswered, whose replies must go out first
    /// (every command gets its terminal line), after which ``commandAnswered()`` reports the
    /// shutdown.
    mutating func requestShutdown() -> Bool {
        shutdownRequested = true
        return commandsUnanswered == 0
    }

    mutating func tick(now: ContinuousClock.Instant) -> Action {
        switch state {
        case .registering(let deadline):
            // A LOGIN still waiting for its password check gets its answer first. (A reply that
            // waits for the client to read does not hold the timeout off.)
            guard now >= deadline, commandsRunning == 0 else { return .none }
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
        let s = d.inSeconds
        return s == s.rounded() ? String(Int(s)) : String(format: "%.1f", s)
    }
}

import Foundation
