import Foundation

/// Runs the built `deskline` executable as a separate process, the way an operator does.
struct CLIProcess {
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// `deskline` sits next to the test bundle in the build directory.
    static var executable: URL {
        let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var dir = me.deletingLastPathComponent()
        while dir.path != "/" {
            let candidate = dir.appendingPathComponent("deskline")
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate.path, isDirectory: &isDir), !isDir.boolValue { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return URL(fileURLWithPath: ".build/debug/deskline")
    }

    let process = Process()
    let stdoutPath: String
    let stderrPath: String
    private let exited: Task<Int32, Never>

    /// Starts `deskline <arguments>` (or another `executable`); `stdin` (if any) is written and closed.
    init(_ arguments: [String], stdin: String? = nil, executable: URL = CLIProcess.executable,
         environment: [String: String] = [:]) throws {
        let base = NSTemporaryDirectory() + "deskline-cli-" + UUID().uuidString
        stdoutPath = base + ".out"
        stderrPath = base + ".err"
        _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.executableURL = executable
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.standardOutput = FileHandle(forWritingAtPath: stdoutPath)
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        let input = Pipe()
        process.standardInput = input
        let (stream, continuation) = AsyncStream.makeStream(of: Int32.self)
        process.terminationHandler = { p in
            continuation.yield(p.terminationStatus)
            continuation.finish()
        }
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        exited = Task { await stream.first(where: { _ in true }) ?? -1 }
    }

    var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    func wait() async -> Result {
        let status = await exited.value
        return Result(status: status, stdout: stdout, stderr: stderr)
    }

    /// Waits until stdout contains `text` (or the process exits, or the deadline passes).
    func waitForOutput(_ text: String, timeout: Duration = .seconds(30)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if stdout.contains(text) { return true }
            if !process.isRunning { return stdout.contains(text) }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    static func run(_ arguments: [String], stdin: String? = nil, executable: URL = CLIProcess.executable) async throws -> Result {
        try await CLIProcess(arguments, stdin: stdin, executable: executable).wait()
    }
}
