"""What Scripts/irctest/run selects from irctest, and which selected tests do not apply to Deskline.

A test listed in NOT_APPLICABLE is deselected (run it anyway with `run --run-na`): its setup
or its assertion needs something the dialect does not have by design (docs/IRC.md). Everything
else that runs is PASS or FAIL; a FAIL is a protocol problem to look at. Entries were made by
reading each test and its transcript against irctest IRCTEST_COMMIT.
"""

# irctest commit the table was made against (the mirror's HEAD when written)
IRCTEST_COMMIT = "b00c039766f5c497920dd787f7cb0e0005bd5ce0"

MODULES = [
    "connection_registration",
    "cap",
    "sasl",
    "labeled_responses",
    "message_tags",
    "echo_message",
    "chathistory",
    "join",
    "part",
    "messages",
    "topic",
    "isupport",
    "pingpong",
    "utf8",
]

# irctest's own convention for a server it does not special-case (see its Makefile)
MARKERS = "not implementation-specific and not deprecated"

REASONS = {
    "impl": "implementation-specific test (marked Ergo or Sable)",
    "channel": "needs a channel with a free-form name (#chan, #test...): channels are "
    "existing tickets only (#1001), anything else is 403 No such channel",
    "pm": "needs a private message between users (or to oneself): Deskline has none, 401",
    "servername": "expects the server name My.Little.Server that irctest's controllers "
    "configure; Deskline's is fixed, `deskline` (the rest of the exchange matched)",
    "nick": "needs a nick of the client's choosing or one nick per connection: the nick "
    "is the account's, several sessions of one account share it, no 433/432",
    "account": "asserts 900's account is the SASL name (jilles); a Deskline account is "
    "tenant/email (irctest/jilles@irctest.example) and the harness maps the login "
    "(900 and 903 were sent)",
    "sasl-rereg": "SASL after registration: every registered session is already logged "
    "in and gets 907 (docs/IRC.md); irctest only recognizes 462 as 'not supported'",
    "cap": "needs a capability Deskline does not offer (multi-prefix, userhost-in-names)",
    "userinfo": "expects USER's realname in WHOIS: Deskline shows the account's user id "
    "and display name",
    "prefix-v": "test assumes a voice mode v in PREFIX; PREFIX=(o)@ is valid",
    "vacuous": "asserts nothing here (JOIN #chan is 403, so there is no 353 to check)",
    "harness": "only exercises the controller's registerUser (deskline user add), no IRC",
}

NOT_APPLICABLE = {
    # connection_registration
    "connection_registration.py::ConnectionRegistrationTestCase::testConnectionRegistration": "servername",
    "connection_registration.py::ConnectionRegistrationTestCase::testNickCollision": "nick",
    "connection_registration.py::ConnectionRegistrationTestCase::testEarlyNickCollision": "nick",
    "connection_registration.py::ConnectionRegistrationTestCase::testNonutf8Username": "userinfo",
    # cap
    "cap.py::CapTestCase::testReqOne": "cap",
    "cap.py::CapTestCase::testReqTwo": "cap",
    "cap.py::CapTestCase::testReqOneThenOne": "cap",
    "cap.py::CapTestCase::testReqPostRegistration": "cap",
    "cap.py::CapTestCase::testCapRemovalByClient": "pm",
    # sasl
    "sasl.py::RegistrationTestCase::testRegistration": "harness",
    "sasl.py::SaslTestCase::testPlain": "account",
    "sasl.py::SaslTestCase::testPlainNonAscii": "account",
    "sasl.py::SaslTestCase::testPlainNoAuthzid": "account",
    "sasl.py::SaslTestCase::testNickUserDuringSasl": "account",
    "sasl.py::SaslTestCase::testPlainPostRegistration": "sasl-rereg",
    "sasl.py::SaslTestCase::testPlainPostRegistrationAndReAuthenticate": "sasl-rereg",
    "sasl.py::SaslTestCase::testPlainReAuthenticate": "sasl-rereg",
    # labeled_responses
    "labeled_responses.py::LabeledResponsesTestCase::testLabeledPrivmsgResponsesToClient": "pm",
    "labeled_responses.py::LabeledResponsesTestCase::testLabeledPrivmsgResponsesToChannel": "channel",
    "labeled_responses.py::LabeledResponsesTestCase::testLabeledPrivmsgResponsesToSelf": "pm",
    "labeled_responses.py::LabeledResponsesTestCase::testLabeledNoticeResponsesToClient": "pm",
    "labeled_responses.py::LabeledResponsesTestCase::testLabeledNoticeResponsesToChannel": "channel",
    "labeled_responses.py::LabeledResponsesTestCase::testLabeledNoticeResponsesToSelf": "pm",
    "labeled_responses.py::LabeledResponsesTestCase::testLabeledTagMsgResponsesToClient": "pm",
    "labeled_responses.py::LabeledResponsesTestCase::testLabeledTagMsgResponsesToChannel": "channel",
    "labeled_responses.py::LabeledResponsesTestCase::testLabeledTagMsgResponsesToSelf": "pm",
    "labeled_responses.py::LabeledResponsesTestCase::testBatchedJoinMessages": "channel",
    # message_tags
    "message_tags.py::MessageTagsTestCase::testBasic": "channel",
    "message_tags.py::MessageTagsTestCase::testLengthLimits": "channel",
    "message_tags.py::MessageTagsTestCase::testRecipientCapability": "pm",
    # echo_message
    "echo_message.py::EchoMessageTestCase::testEchoMessage": "channel",
    "echo_message.py::EchoMessageTestCase::testDirectMessageEcho": "pm",
    # chathistory
    "chathistory.py::ChathistoryTestCase::testInvalidTargets": "channel",
    "chathistory.py::ChathistoryTestCase::testMessagesToSelf": "pm",
    "chathistory.py::ChathistoryTestCase::testChathistory": "channel",
    "chathistory.py::ChathistoryTestCase::testChathistoryNoEventPlayback": "channel",
    "chathistory.py::ChathistoryTestCase::testChathistoryDMs": "pm",
    "chathistory.py::ChathistoryTestCase::testChathistoryDMClientOnlyTags": "pm",
    "chathistory.py::ChathistoryTestCase::testChathistoryTargets": "channel",
    "chathistory.py::ChathistoryTestCase::testChathistoryTargetsExcludesUpdatedTargets": "channel",
    # join
    "join.py::JoinTestCase::testJoinNamreply": "vacuous",
    "join.py::JoinTestCase::testJoinAllMessages": "channel",
    "join.py::JoinTestCase::testJoinTwice": "channel",
    "join.py::JoinTestCase::testJoinPartiallyInvalid": "channel",
    "join.py::JoinTestCase::testJoinPartiallyInvalidLabeledResponse": "channel",
    "join.py::JoinTestCase::testJoinKey": "channel",
    "join.py::JoinTestCase::testJoinKeys": "channel",
    "join.py::JoinTestCase::testJoinManySingleKey": "channel",
    # part
    "part.py::PartTestCase::testBasicPart": "channel",
    "part.py::PartTestCase::testBasicPartRfc2812": "channel",
    "part.py::PartTestCase::testPartMessage": "channel",
    # messages
    "messages.py::PrivmsgTestCase::testPrivmsg": "channel",
    "messages.py::PrivmsgTestCase::testPrivmsgToUser": "pm",
    "messages.py::NoticeTestCase::testNotice": "channel",
    "messages.py::TagsTestCase::testLineTooLong": "channel",
    # topic
    "topic.py::TopicTestCase::testTopicRfc": "channel",
    "topic.py::TopicTestCase::testTopicModern": "channel",
    "topic.py::TopicTestCase::testTopicMode": "channel",
    "topic.py::TopicTestCase::testUnsetTopicResponses": "channel",
    "topic.py::TopicPrivilegesTestCase::testTopicPrivileges": "channel",
    # isupport
    "isupport.py::IsupportTestCase::testPrefix": "prefix-v",
    # pingpong
    "pingpong.py::PingPongTestCase::testPing": "servername",
    "pingpong.py::PingPongTestCase::testPingEmptyToken": "servername",
    # utf8
    "utf8.py::Utf8TestCase::testUtf8Validation": "pm",
}


def short_id(nodeid: str) -> str:
    """`irctest/server_tests/cap.py::C::t[p]` -> `cap.py::C::t[p]`."""
    return nodeid.split("server_tests/", 1)[-1]


def not_applicable(nodeid: str):
    """The reason key of a test that does not apply, or None."""
    sid = short_id(nodeid)
    return NOT_APPLICABLE.get(sid) or NOT_APPLICABLE.get(sid.split("[", 1)[0])
