"""IVR flows (jambonz-style verbs), recognition policy, DTMF menus and the prompts they say.

The model lives in `ivr.flows` (it is also what the admin API validates); this section is it.
"""

from __future__ import annotations

from ivr.flows import Flows


class IvrConfig(Flows):
    pass
