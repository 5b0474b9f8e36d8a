import NIOCore

/// One framed unit of client input.
public enum LineFrame: Sendable, Equatable {
    /// A complete line without its `\n` / `\r\n`.
    case line(ByteBuffer)
    /// A line longer than the maximum was discarded (once per overlong line).
    case tooLong
}

/// Splits input on LF (a preceding CR is dropped), with a hard maximum line length.
///
/// Unlike `LineBasedFrameDecoder` wrapped in `ByteToMessageHandler(maximumBufferSize:)`, which
/// fails the whole channel once the limit is hit, this decoder discards the overlong line —
/// without ever buffering more than `maximumLineBytes` — reports it once as ``LineFrame/tooLong``
/// and carries on with the next line. A client that sends one bad line gets an error and keeps
/// its session, as on mature IRC servers (Ergo's ERR_INPUTTOOLONG).
public struct LineFrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = LineFrame

    private let maximumLineBytes: Int
    private var discarding = false
    /// How far the buffer was already searched for a newline, so long partial lines are not
    /// rescanned from the start on every read.
    private var scanned = 0

    public init(maximumLineBytes: Int) {
        precondition(maximumLineBytes > 0)
        self.maximumLineBytes = maximumLineBytes
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let view = buffer.readableBytesView
        if let newline = view[(view.startIndex + scanned)...].firstIndex(of: UInt8(ascii: "\n")) {
            let length = newline - view.startIndex
            scanned = 0
            if discarding {
                buffer.moveReaderIndex(forwardBy: length + 1)
                discarding = false
                return .continue
            }
            var line = buffer.readSlice(length: length)!
            buffer.moveReaderIndex(forwardBy: 1)
            if line.readableBytesView.last == UInt8(ascii: "\r") {
                line.moveWriterIndex(to: line.writerIndex - 1)
            }
            if line.readableBytes > maximumLineBytes {
                context.fireChannelRead(Self.wrapInboundOut(.tooLong))
            } else {
                context.fireChannelRead(Self.wrapInboundOut(.line(line)))
            }
            return .continue
        }
        // No newline yet. +1 leaves room for the CR of a line that is exactly at the limit.
        if discarding || buffer.readableBytes > maximumLineBytes + 1 {
            if !discarding {
                discarding = true
                context.fireChannelRead(Self.wrapInboundOut(.tooLong))
            }
            buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
            scanned = 0
            return .needMoreData
        }
        scanned = buffer.readableBytes
        return .needMoreData
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        // A last line without a newline (`printf 'QUIT' | nc -N`) still counts.
        if seenEOF, buffer.readableBytes > 0 {
            if !discarding {
                var line = buffer.readSlice(length: buffer.readableBytes)!
                if line.readableBytesView.last == UInt8(ascii: "\r") {
                    line.moveWriterIndex(to: line.writerIndex - 1)
                }
                context.fireChannelRead(Self.wrapInboundOut(line.readableBytes > maximumLineBytes ? .tooLong : .line(line)))
            } else {
                buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
            }
            discarding = false
            scanned = 0
        }
        return .needMoreData
    }
}
