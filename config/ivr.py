"""IVR flows (jambonz-style verbs), recognition policy, DTMF menus and the prompts they say.

The model lives in `config.flows` (it is also what the admin API validates); this section is it.
"""

from __future__ import annotations

from config.flows import Flows


class IvrConfig(Flows):
    pass
