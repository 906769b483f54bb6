"""RFC 4475 (SIP torture test messages) against a live SipEndpoint on loopback.

The messages are written out here from the RFC (bodies and the odd long value shortened or
generated, binary S/MIME parts replaced by text). Only the top Via's sent-by is changed, to
this test's socket ($VIA), so every response stays on loopback; $CL is the body's length.

Valid messages are handled (an INVITE reaches the application, other methods get their
normal answer); invalid ones get the RFC's rejection or are dropped; after each one the
endpoint still answers OPTIONS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from config.telephony import SipConfig
from telephony.call import Call
from telephony.endpoint import SipEndpoint
from telephony.sip.message import Response
from telephony.testing import SipPeer

pytestmark = pytest.mark.anyio

SDP = r'''v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.3
s=-
c=IN IP4 192.0.2.4
t=0 0
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
'''

VIA_SPELLINGS = ["v", "V", "Via", "ViA", "VIA", "via", "V ", "v  ", "Via  "]
CALL = "call"  # an INVITE the application sees (our handler then answers 486)
DROP = "drop"  # no response at all

VALID: dict[str, tuple[str, Any]] = {
    # 3.1.1.1 A short tortuous INVITE
    "wsinv": (r'''INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : "J Rosenberg \\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : $CL
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    $VIA;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \"\"" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

''' + SDP, 481),  # a To tag: in-dialog, and no such dialog (RFC 3261 12.2.2); the next case drops the tag
    # 3.1.1.2 Wide range of valid characters (an unknown method: 405)
    "intmeth": ("!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:"
                "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0\n"
                "Via: SIP/2.0/TCP $VIA;branch=z9hG4bK-.!%66*_+`'~\n"
                'To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:1_unusual.URI~(to-be!sure)&isn\'t+it$/crazy?,/;;*@example.com>\n'
                "From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%="
                '"\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439";tag=_token~1\'+`*%!-.\n'
                "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\n"
                "CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~\n"
                "Max-Forwards: 255\n"
                "extensionHeader-!.%*+_`'~:\ufeff\u5927\u505c\u96fb\n"
                "Content-Length: 0\n\n", 405),
    # 3.1.1.3 Valid use of the % escaping mechanism
    "esc01": (r'''INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: $CL

''' + SDP, CALL),
    # 3.1.1.4 Escaped nulls in URIs (we are no registrar: 405)
    "escnull": (r'''REGISTER sip:example.com SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0

''', 405),
    # 3.1.1.5 Use of % when it is not an escape
    "esc02": (r'''RE%47IST%45R sip:registrar.example.com SIP/2.0
To: "%Z%45" <sip:resource@example.com>
From: "%Z%45" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP $VIA;branch=z9hG4bK209%fzsnel234
CSeq: 29344 RE%47IST%45R
Max-Forwards: 70
Contact: <sip:alias1@host1.example.com>
C%6Fntact: <sip:alias2@host2.example.com>
Contact: <sip:alias3@host3.example.com>
l: 0

''', 405),
    # 3.1.1.6 No LWS between display name and <
    "lwsdisp": (r'''OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw
l: 0

''', 200),
    # 3.1.1.7 Long values in header fields (generated here rather than typed out)
    "longreq": ("INVITE sip:user@example.com SIP/2.0\n"
                'To: "I have a user name of ' + "extreme " * 10 + 'proportion" <sip:user@example.com:6000;'
                "unknownparam1=very" + "long" * 25 + "value;longparam" + "name" * 25 + "=shortvalue;very"
                + "long" * 25 + "ParameterNameWithNoValue>\n"
                "F: sip:" + "amazinglylongcallername" * 5 + "@example.net;tag=12" + "982" * 50 + "424;unknownheaderparam"
                + "name" * 20 + "=unknowheaderparam" + "value" * 15 + ";unknownValuelessparam" + "paramname" * 15 + "\n"
                "Call-ID: longreq.one" + "really" * 20 + "longcallid\n"
                "CSeq: 3882340 INVITE\n"
                "Unknown-" + "LongLong" * 10 + "-Name: unknown-" + "long" * 20 + "-value; unknown-" + "long" * 20
                + "-parameter-name = unknown-" + "long" * 20 + "-parameter-value\n"
                "Via: SIP/2.0/TCP $VIA\n"
                + "".join(f"{VIA_SPELLINGS[i % 9]}: SIP/2.0/TCP sip{i}.example.com\n" for i in range(32, 0, -1))
                + "Via: SIP/2.0/TCP host.example.com;received=192.0.2.5;branch=very" + "long" * 50 + "branchvalue\n"
                "Max-Forwards: 70\n"
                "Contact: <sip:" + "amazinglylongcallername" * 5 + "@host5.example.net>\n"
                "Content-Type: application/sdp\n"
                "l: $CL\n\n" + SDP, CALL),
    # 3.1.1.8 Extra trailing octets in a UDP datagram: the INVITE after the REGISTER is noise
    "dblreq": (r'''REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw23492
Content-Length: 0

INVITE sip:joe@example.com SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234
Content-Type: application/sdp
Content-Length: 150

''' + SDP, 405),
    # 3.1.1.9 Semicolon-separated parameters in URI user part
    "semiuri": (r'''OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
      multipart/mixed, multipart/signed,
      message/sip, message/sipfrag
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw
l: 0

''', 200),
    # 3.1.1.10 Varied and unknown transport types
    "transports": (r'''OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0

''', 200),
    # 3.1.1.11 Multipart MIME message (MESSAGE: not a method we take)
    "mpart01": (r'''MESSAGE sip:kumiko@example.org SIP/2.0
Via: SIP/2.0/UDP $VIA;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport
Max-Forwards: 70
Route: <sip:127.0.0.1:5080;lr>
Identity: r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2WxhgTV1PF7hHuLIK0YWVKZhKv9Mj8UeXqkMVbnVq37CD+813gvYjcBUaZngQmXc9WNZSDNGCzA
Contact: <sip:fluffy@127.0.0.1:5070>
To: <sip:kumiko@example.org>
From: <sip:fluffy@example.com>;tag=2fb0dcc9
Call-ID: 3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..
CSeq: 1 MESSAGE
Content-Transfer-Encoding: binary
Content-Type: multipart/mixed;boundary=7a9cbec02ceef655
Date: Sat, 15 Oct 2005 04:44:56 GMT
User-Agent: SIPimp.org/0.2.5 (curses)
Content-Length: $CL

--7a9cbec02ceef655
Content-Type: text/plain
Content-Transfer-Encoding: binary

Hello
--7a9cbec02ceef655
Content-Type: application/octet-stream
Content-Transfer-Encoding: binary

(signature bytes)
--7a9cbec02ceef655--
''', 405),
    # 3.1.1.12 / 3.1.1.13 Unusual and empty reason phrases: responses to nothing of ours
    "unreason": ("SIP/2.0 200 = 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e \u0434\u0435\u0432\u044f\u043d\u043e\u0441\u0442"
                 "\u043e \u0434\u0435\u0432\u044f\u0442\u044c - \u043f\u0440\u043e\u0441\u0442\u043e\u0435\n"
                 "Via: SIP/2.0/UDP $VIA;branch=z9hG4bK-39234-23523\n"
                 "Call-ID: unreason.1234ksdfak3j2erwedfsASdf\nCSeq: 35 INVITE\n"
                 "From: sip:user@example.com;tag=11141343\nTo: sip:user@example.edu;tag=2229\n"
                 "Content-Length: 0\n\n", DROP),
    "noreason": ("SIP/2.0 100 \nVia: SIP/2.0/UDP $VIA;branch=z9hG4bKsdf\nCall-ID: noreason.asndj203insdf99223ndf\n"
                 "CSeq: 35 INVITE\nFrom: <sip:user@example.com>;tag=39ansfi3\nTo: <sip:user@example.edu>;tag=902jndnke3\n"
                 "Content-Length: 0\n\n", DROP),
    # 3.3.8 (zeromf) Max-Forwards of zero: a UAS answers as usual
    "zeromf": (r'''OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=3ghsd41
Call-ID: zeromf.jfasdlfnm2o2l43r5u0asdfas
CSeq: 39234321 OPTIONS
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw2349i
Max-Forwards: 0
Content-Length: 0

''', 200),
    # 3.3.? unknown schemes in header fields other than the Request-URI are fine
    "unksm2": (r'''REGISTER sip:example.com SIP/2.0
To: isbn:2983792873
From: <http://www.example.com>;tag=3234233
Call-ID: unksm2.daksdj@hyphenated-host.example.com
CSeq: 234902 REGISTER
Max-Forwards: 70
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw
Contact: <name:John_Smith>
l: 0

''', 405),
    # 3.3.? an Accept we cannot honour does not stop an INVITE
    "sdp01": (r'''INVITE sip:user@example.com SIP/2.0
To: sip:j_user@example.com
Contact: <sip:caller@host15.example.net>
From: sip:caller@example.net;tag=234
Max-Forwards: 5
Call-ID: sdp01.ndaksdj9342dasdd
Accept: text/nobodyKnowsThis
CSeq: 8 INVITE
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw
Content-Length: $CL
Content-Type: application/sdp

''' + SDP, CALL),
    # 3.4.1 INVITE with RFC 2543 syntax (no branch cookie, no From tag)
    "inv2543": (r'''INVITE sip:UserB@example.com SIP/2.0
Via: SIP/2.0/UDP $VIA
From: <sip:UserA@example.com>
To: <sip:UserB@example.com>
Call-ID: 242t4h32t4t@example.com
CSeq: 1 INVITE
Max-Forwards: 70
Contact: <sip:UserA@192.0.2.16>
Content-Type: application/sdp
Content-Length: $CL

v=0
o=UserA 2890844526 2890844526 IN IP4 example.com
s=-
c=IN IP4 192.0.2.16
t=0 0
m=audio 49172 RTP/AVP 0
a=rtpmap:0 PCMU/8000
''', CALL),
    # not from the RFC: an INVITE whose SDP sits in a multipart/mixed body
    "mpart-sdp": (r'''INVITE sip:900@example.com SIP/2.0
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKmp1
From: <sip:a@example.com>;tag=mp
To: <sip:900@example.com>
Call-ID: mpart-sdp.1
CSeq: 1 INVITE
Max-Forwards:70
Subject:
Content-Type: multipart/mixed;boundary=unique-boundary-1
Content-Length: $CL

--unique-boundary-1
Content-Type: application/sdp

''' + SDP + r'''
--unique-boundary-1
Content-Type: application/isup;version=itu-t92+

(isup)
--unique-boundary-1--
''', CALL),
}

VALID["wsinv-untagged"] = (VALID["wsinv"][0].replace(";   tag    = 1918181833n", ""), CALL)

INVALID: dict[str, tuple[str, Any]] = {
    # 3.1.2.1 Extraneous header field separators
    "badinv01": (r'''INVITE sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
Call-ID: badinv01.0ha0isndaksdjasdf3234nas
CSeq: 8 INVITE
Via: SIP/2.0/UDP $VIA;;,;,,
Contact: "Joe" <sip:joe@example.org>;;;;
Content-Length: $CL
Content-Type: application/sdp

''' + SDP, 400),
    # 3.1.2.2 Content-Length larger than the message
    "clerr": (r'''INVITE sip:user@example.com SIP/2.0
Max-Forwards: 80
To: sip:j.user@example.com
From: sip:caller@example.net;tag=93942939o2
Contact: <sip:caller@hungry.example.net>
Call-ID: clerr.0ha0isndaksdjweiafasdk3
CSeq: 8 INVITE
Via: SIP/2.0/UDP $VIA;branch=z9hG4bK-39234-23523
Content-Type: application/sdp
Content-Length: 9999

''' + SDP, 400),
    # 3.1.2.3 Negative Content-Length
    "ncl": (r'''INVITE sip:user@example.com SIP/2.0
Max-Forwards: 254
To: sip:j.user@example.com
From: sip:caller@example.net;tag=32394234
Call-ID: ncl.0ha0isndaksdj2193423r542w35
CSeq: 0 INVITE
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw
Contact: <sip:caller@example53.example.net>
Content-Type: application/sdp
Content-Length: -999

''' + SDP, 400),
    # 3.1.2.4 Request scalar fields with overlarge values
    "scalar02": (r'''REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP $VIA;branch=z9hG4bKsxcaldfn3
Max-Forwards: 300
From: sip:user@example.com;tag=932
To: sip:user@example.com
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
CSeq: 36893488147419103232 REGISTER
Contact: <sip:user@host129.example.com>
  ;expires=280297596632815
Expires: 1293452934523485
Content-Length: 0

''', 400),
    # 3.1.2.5 Response scalar fields with overlarge values
    "scalarlg": (r'''SIP/2.0 503 Service Unavailable
Via: SIP/2.0/TCP $VIA;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129
To: <sip:user@example.com>
From: <sip:other@example.net>;tag=2easdjfejw
CSeq: 9292394834772304023312 OPTIONS
Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r
Retry-After: 949302838503028349304023988
Warning: 1812 overture "In Progress"
Content-Length: 0

''', DROP),
    # 3.1.2.6 Unterminated quoted string in display name
    "quotbal": (r'''INVITE sip:user@example.com SIP/2.0
To: "Mr. J. User <sip:j.user@example.com>
From: sip:caller@example.net;tag=93334
Max-Forwards: 10
Call-ID: quotbal.aksdj
Contact: <sip:caller@host59.example.net>
CSeq: 8 INVITE
Via: SIP/2.0/UDP $VIA;branch=z9hG4bK-3v7nWAmedbr3mHgs
Content-Type: application/sdp
Content-Length: $CL

''' + SDP, 400),
    # 3.1.2.7 <> enclosing Request-URI
    "ltgtruri": (r'''INVITE <sip:user@example.com> SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=39291
Max-Forwards: 23
Call-ID: ltgtruri.1@192.0.2.5
CSeq: 1 INVITE
Via: SIP/2.0/UDP $VIA;branch=z9hG4bK-3v7n2Amedbr3mHgs
Contact: <sip:caller@host5.example.net>
Content-Type: application/sdp
Content-Length: $CL

''' + SDP, 400),
    # 3.1.2.8 Malformed SIP Request-URI (embedded LWS)
    "lwsruri": (r'''INVITE sip:user@example.com; lr SIP/2.0
To: sip:user@example.com;tag=3xfe-9921883-z9f
From: sip:caller@example.net;tag=231413434
Max-Forwards: 5
Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423
CSeq: 2130706432 INVITE
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw2395
Contact: <sip:caller@host1.example.net>
Content-Type: application/sdp
Content-Length: $CL

''' + SDP, 400),
    # 3.1.2.9 Multiple SP separating Request-Line elements
    "lwsstart": (r'''INVITE  sip:user@example.com  SIP/2.0
Max-Forwards: 8
To: sip:user@example.com
From: sip:caller@example.net;tag=8814
Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com
CSeq: 1893884 INVITE
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw3923
Contact: <sip:caller@host1.example.net>
Content-Type: application/sdp
Content-Length: $CL

''' + SDP, 400),
    # 3.1.2.10 SP characters at end of Request-Line
    "trws": ("OPTIONS sip:remote-target@example.com SIP/2.0  \n"
             "Via: SIP/2.0/TCP $VIA;branch=z9hG4bKkdjuw\n"
             "Max-Forwards: 70\nTo: <sip:remote-target@example.com>\n"
             "From: <sip:local-resource@example.com>;tag=329429089\n"
             "Call-ID: trws.oicu34ofijoiu2309v\nCSeq: 238923 OPTIONS\nContent-Length: 0\n\n", 400),
    # 3.1.2.11 Escaped headers in SIP Request-URI
    "escruri": (r'''INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=341518
Max-Forwards: 7
Contact: <sip:caller@host39923.example.net>
Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5
CSeq: 149209342 INVITE
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw
Content-Type: application/sdp
Content-Length: $CL

''' + SDP, 400),
    # 3.1.2.13 Failure to enclose name-addr URI in <>
    "regbadct": (r'''REGISTER sip:example.com SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=998332
Max-Forwards: 70
Call-ID: regbadct.k345asrl3fdbv@10.0.0.1
CSeq: 1 REGISTER
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw
Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E
l: 0

''', 400),
    # 3.1.2.14 Spaces within addr-spec
    "badaspec": (r'''OPTIONS sip:user@example.org SIP/2.0
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw
Max-Forwards: 119
From: sip:caller@example.com;tag=341518
To: "Watson, Thomas" < sip:t.watson@example.org >
Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3
Accept: application/sdp
CSeq: 3923239 OPTIONS
l: 0

''', 400),
    # 3.1.2.15 Non-token characters in display name
    "baddn": (r'''OPTIONS sip:t.watson@example.org SIP/2.0
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw
Max-Forwards: 70
From: Bell, Alexander <sip:a.g.bell@example.com>;tag=43
To: Watson, Thomas <sip:t.watson@example.org>
Call-ID: baddn.31415@c.example.com
Accept: application/sdp
CSeq: 3923239 OPTIONS
l: 0

''', 400),
    # 3.1.2.16 Unknown protocol version
    "badvers": (r'''OPTIONS sip:t.watson@example.org SIP/7.0
Via: SIP/7.0/UDP $VIA;branch=z9hG4bKkdjuw
Max-Forwards: 70
From: A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe
To: T. Watson <sip:t.watson@example.org>
Call-ID: badvers.31417@c.example.com
CSeq: 1 OPTIONS
l: 0

''', 505),
    # 3.1.2.17 Start line and CSeq method mismatch
    "mismatch01": (r'''OPTIONS sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch01.dj0234sxdfl3
CSeq: 8 INVITE
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw
l: 0

''', 400),
    # 3.1.2.18 Unknown method with CSeq method mismatch
    "mismatch02": (r'''NEWMETHOD sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch02.dj0234sxdfl3
CSeq: 8 INVITE
Contact: <sip:caller@host.example.net>
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw
Content-Type: application/sdp
l: $CL

''' + SDP, 400),
    # 3.1.2.19 Overlarge response code
    "bigcode": (r'''SIP/2.0 4294967301 better not break the receiver
Via: SIP/2.0/UDP $VIA;branch=z9hG4bK-39234-23523
Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i
CSeq: 353494 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>

''', DROP),
    # 3.3.1 Missing transaction-critical header fields (no To, From, Call-ID)
    "insuf": (r'''INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKue456
Content-Type: application/sdp
l: $CL

''' + SDP, 400),
    # 3.3.3 Request with unknown Require options
    "bext01": (r'''OPTIONS sip:user@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.net;tag=242etr
Max-Forwards: 6
Call-ID: bext01.0ha0isndaksdj
Require: nothingSupportedHere, nothingHereEither
Proxy-Require: noProxiesSupportThis, nothingHereEither
CSeq: 8 OPTIONS
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw
l: 0

''', 420),
    # 3.3.4 Unknown content type
    "invut": (r'''INVITE sip:user@example.com SIP/2.0
Contact: <sip:caller@host5.example.net>
To: sip:j.user@example.com
From: sip:caller@example.net;tag=8392034
Max-Forwards: 70
Call-ID: invut.0ha0isndaksdjadsfij34n23d
CSeq: 235448 INVITE
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw
Content-Type: application/unknownformat
Content-Length: $CL

<audio>
 <pcmu port="443"/>
</audio>
''', 415),
    # 3.3.5 Unknown authorization scheme (we are no registrar: refused all the same)
    "regaut01": (r'''REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=87321hj23128
Max-Forwards: 8
Call-ID: regaut01.0ha0isndaksdj
CSeq: 9338 REGISTER
Via: SIP/2.0/TCP $VIA;branch=z9hG4bKkdjuw
Authorization: NoOneKnowsThisScheme opaque-data=here
Content-Length:0

''', 405),
    # 3.3.6 Multiple values in single-value required fields
    "multi01": (r'''INVITE sip:user@company.com SIP/2.0
Contact: <sip:caller@host25.example.net>
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw
Max-Forwards: 70
CSeq: 5 INVITE
Call-ID: multi01.98asdh@192.0.2.1
CSeq: 59 INVITE
Call-ID: multi01.98asdh@192.0.2.2
From: sip:caller@example.com;tag=3413415
To: sip:user@example.com
To: sip:other@example.net
From: sip:caller@example.net;tag=2923420123
Content-Type: application/sdp
l: $CL
Contact: <sip:caller@host36.example.net>
Max-Forwards: 5

''' + SDP, 400),
    # 3.3.7 Multiple Content-Length values
    "mcl01": (r'''OPTIONS sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKkdjuw
To: sip:user@example.com
From: sip:caller@example.net;tag=32394234
Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf
CSeq: 15932 OPTIONS
Content-Length: 13
Max-Forwards: 60
Content-Length: 5
Content-Type: text/plain

There's no way to know how many octets are supposed to be here.
''', 400),
    # 3.3.8 200 OK response with a broadcast Via
    "bcast": (r'''SIP/2.0 200 OK
Via: SIP/2.0/UDP $VIA;branch=z9hG4bK1324923
Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23
Call-ID: bcast.0384840201234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: 0
Contact: <sip:user@host28.example.com>

''', DROP),
    # 3.3.12 Unknown scheme in the Request-URI
    "novelsc": (r'''OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: novelsc.asdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/TCP $VIA;branch=z9hG4bKkdjuw39234
Content-Length: 0

''', 416),
}


def render(text: str, via: str) -> bytes:
    msg = text.replace("\r\n", "\n").replace("\n", "\r\n").replace("$VIA", via)
    head, sep, body = msg.partition("\r\n\r\n")
    if "$CL" in head:
        n = len(body.encode("utf-8", "surrogateescape"))
        head = head.replace("$CL", str(n))
    return (head + sep + body).encode("utf-8", "surrogateescape")


@pytest.fixture
async def live() -> AsyncIterator[tuple[SipEndpoint, SipPeer, list[Call]]]:
    calls: list[Call] = []

    async def on_call(call: Call) -> None:
        calls.append(call)
        await call.reject(486)

    ep = SipEndpoint(SipConfig(host="127.0.0.1", port=0, rtp_port_min=44000, rtp_port_max=44999), on_call)
    await ep.start()
    peer = await SipPeer.open()
    yield ep, peer, calls
    await ep.stop(grace_s=0.2)
    peer.close()


async def still_answers_options(ep: SipEndpoint, peer: SipPeer) -> None:
    peer.send(peer.make("OPTIONS", f"sip:900@127.0.0.1:{ep.port}"), ("127.0.0.1", ep.port))
    assert (await peer.response(200, method="OPTIONS")).status == 200


@pytest.mark.parametrize("name", [*VALID, *INVALID])
async def test_rfc4475_message(name: str, live: tuple[SipEndpoint, SipPeer, list[Call]]) -> None:
    ep, peer, calls = live
    text, expect = VALID.get(name) or INVALID[name]
    peer.send(render(text, f"127.0.0.1:{peer.port}"), ("127.0.0.1", ep.port))
    if expect == DROP:
        assert await peer.quiet(0.15) == []
    elif expect == CALL:
        final = await peer.response(486, within_s=2)
        assert final.status == 486 and len(calls) == 1
        if name == "wsinv-untagged":  # every tortuous part was read right
            call = calls[0]
            assert (call.caller, call.callee, call.call_id) == ("jdrosen", "vivekg", "wsinv.ndaksdj@192.0.2.1")
            assert call.headers.get("newfangledheader") is None and call.offer.audio.port == 49217
    else:
        got = await peer.response(within_s=2)
        assert isinstance(got, Response) and got.status == expect, f"{name}: {got.status} {got.reason}"
        if expect == 420:
            assert got.headers.get_all("unsupported") == ["nothingSupportedHere", "nothingHereEither"]
        if expect in (405,):
            assert got.headers.get("allow")
        assert calls == []
    assert ep.active_calls == 0 or expect == CALL
    await still_answers_options(ep, peer)
