#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ArgumentParser
import Foundation

/// Reads a password from the terminal (no echo, asked twice) or, when stdin is not a terminal,
/// from the first line of stdin. Never from argv, where other users could read it (`ps`).
enum PasswordInput {
    static func read(prompt: String) throws -> String {
        if isatty(STDIN_FILENO) == 1 {
            let first = try readHidden(prompt + ": ")
            let second = try readHidden("Repeat " + prompt.lowercased() + ": ")
            guard first == second else { throw CLIError("the passwords do not match") }
            return first
        }
        guard let line = readLine(strippingNewline: true), !line.isEmpty else {
            throw CLIError("expected the password on the first line of standard input")
        }
        return line.hasSuffix("\r") ? String(line.dropLast()) : line
    }

    private static func readHidden(_ prompt: String) throws -> String {
        writeError(prompt)
        var saved = termios()
        tcgetattr(STDIN_FILENO, &saved)
        var silent = saved
        silent.c_lflag &= ~tcflag_t(ECHO)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &silent)
        defer {
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved)
            writeError("\n")
        }
        guard let line = readLine(strippingNewline: true) else { throw CLIError("no password entered") }
        return line
    }

    private static func writeError(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }
}
