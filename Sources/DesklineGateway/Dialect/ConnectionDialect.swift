import DesklineCore
import Logging
import NIOCore

/// How one connection speaks. The ``SessionHandler`` owns the connection — framing, the order of
/// commands and replies, flood control, timers, the send queue — and asks its dialect for
/// everything that is wire text: what a line means, what its reply looks like, and how the
/// connection is greeted, kept alive and told goodbye. A listener picks the dialect
/// (`listen`/`tls`: native, `irc`: IRC); Core's services, access rules and limits are the same
/// under every dialect.
protocol ConnectionDialect: AnyObject, Sendable {
    /// The lines sent as the connection opens (none: the client speaks first).
    func greeting() -> [ByteBuffer]
    /// The line that tells the client `notice`.
    func notice(_ notice: ConnectionNotice) -> ByteBuffer
    /// On the event loop: what one framed line is — answered at once, or work to run.
    func prepare(_ frame: LineFrame, scope: SessionScope?) -> PreparedLine
}

/// What a connection is told outside the replies to its commands.
enum ConnectionNotice: Sendable {
    /// A keepalive the client is to answer.
    case ping(token: String)
    /// The connection closes now (a timeout, the server full or stopping); `code` is the
    /// native dialect's error code.
    case closing(code: String, text: String)
    /// The server is shutting down; the connection closes after this line.
    case shuttingDown
}

/// What one line's command produced, in wire form, in order.
struct LineOutcome: Sendable {
    var lines: [ByteBuffer]
    /// The session's identity after the line: set by the line that logs in.
    var scope: SessionScope?
    /// The session ends after these lines.
    var quit = false
    /// Called on the event loop once the lines were written (or dropped: the connection closed).
    var written: (@Sendable () -> Void)?
}

/// What a command that has work to do runs with.
struct CommandRun: Sendable {
    var scope: SessionScope?
    var outbox: Outbox
    /// Makes ``logger`` (the session's), when something is logged.
    var log: SessionLog
    var logger: Logger { log.logger }
    /// For a pipelining line (``PreparedLine/work(pipelines:run:)``): to be called once its write
    /// is queued in the store, so the session may start its next pipelining line.
    var whenQueued: (@Sendable () -> Void)?
}

/// A line made ready to run. (Boxed: an idle session keeps an empty one.)
indirect enum PreparedLine: Sendable {
    /// Its reply is known without I/O (malformed, unknown, not allowed, or a pure state change).
    case answered(LineOutcome)
    /// Work to run in a task on the connection's event loop. A pipelining line makes exactly one
    /// ticket write and may run while the session's earlier pipelining lines wait for theirs
    /// (see ``Command/pipelines``).
    case work(pipelines: Bool, run: @Sendable (CommandRun) async -> LineOutcome)

    /// Whether it may run while earlier pipelining lines wait for their writes. An answered line
    /// changes nothing they depend on.
    var pipelines: Bool {
        switch self {
        case .answered: true
        case .work(let pipelines, _): pipelines
        }
    }
}
