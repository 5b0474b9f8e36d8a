import DesklineCore
import DesklineProtocol
import NIOCore

/// The native dialect of a connection (docs/PROTOCOL.md): ``Session`` dispatches its lines through
/// the command table, and every line is a ``ServerLine``.
final class NativeConnection: ConnectionDialect {
    let session: Session

    init(_ session: Session) {
        self.session = session
    }

    func greeting() -> [ByteBuffer] {
        [Outbox.encode(session.welcome)]
    }

    func notice(_ notice: ConnectionNotice) -> ByteBuffer {
        Outbox.encode(Self.line(for: notice))
    }

    static func line(for notice: ConnectionNotice) -> ServerLine {
        switch notice {
        case .ping(let token): ServerLine(.event, "PING", text: token)
        case .closing(let code, let text): ServerLine(.event, "ERROR", [code], text: text)
        case .shuttingDown: ServerLine(.event, "SHUTDOWN", text: "The server is shutting down. Please reconnect later.")
        }
    }

    func prepare(_ frame: LineFrame, scope: SessionScope?) -> PreparedLine {
        switch session.prepare(frame, scope: scope) {
        case .answered(let outcome):
            return .answered(Self.wire(outcome))
        case .command(let command, let message, let arguments):
            let session = self.session
            return .work(pipelines: command.pipelines) { run in
                Self.wire(await session.run(command, message, arguments, scope: run.scope, outbox: run.outbox,
                                            whenQueued: run.whenQueued))
            }
        }
    }

    private static func wire(_ outcome: Session.Outcome) -> LineOutcome {
        LineOutcome(lines: outcome.lines.map(Outbox.encode), scope: outcome.scope, quit: outcome.quit)
    }
}
