"""A realistic SAP ORDERS05 IDoc (CRM sales order -> ERP) in xmltodict's dict model.

Three items, two partners, Chinese names and an ampersand, SAP's ``BEGIN`` and
``SEGMENT`` attributes. Used by the golden tests and by the benchmark numbers
in the report.
"""

from __future__ import annotations

from typing import Any


def orders05() -> dict[str, Any]:
    """A fresh copy each call, so a test that mutates it cannot break another."""
    return {
        "ORDERS05": {
            "IDOC": {
                "@BEGIN": "1",
                "EDI_DC40": {
                    "@SEGMENT": "1",
                    "TABNAM": "EDI_DC40",
                    "MANDT": "800",
                    "DOCNUM": "0000000004711001",
                    "DIRECT": "2",
                    "IDOCTYP": "ORDERS05",
                    "MESTYP": "ORDERS",
                    "SNDPOR": "SYNCBUS",
                    "SNDPRT": "LS",
                    "SNDPRN": "CRM_PROD",
                    "RCVPOR": "SAPPRD",
                    "RCVPRT": "LS",
                    "RCVPRN": "PRDCLNT800",
                    "CREDAT": "20240315",
                    "CRETIM": "093012",
                },
                "E1EDK01": {
                    "@SEGMENT": "1",
                    "CURCY": "CNY",
                    "BSART": "ZOR",
                    "BELNR": "SO-2024-000815",
                    "NTGEW": "14.500",
                    "GEWEI": "KGM",
                },
                "E1EDKA1": [
                    {"@SEGMENT": "1", "PARVW": "AG", "PARTN": "C100234",
                     "NAME1": "上海东方贸易有限公司", "ORT01": "上海"},
                    {"@SEGMENT": "1", "PARVW": "WE", "PARTN": "C100234",
                     "NAME1": "Smith & Sons <Shanghai> Ltd.", "ORT01": "Shanghai"},
                ],
                "E1EDP01": [
                    {"@SEGMENT": "1", "POSEX": "000010", "MENGE": "2", "MENEE": "PCE",
                     "VPREI": "1200.00", "NETWR": "2400.00",
                     "E1EDP19": {"@SEGMENT": "1", "QUALF": "002", "IDTNR": "MAT-0001",
                                 "KTEXT": "工业泵 IP-200"}},
                    {"@SEGMENT": "1", "POSEX": "000020", "MENGE": "1.5", "MENEE": "KGM",
                     "VPREI": "80.00", "NETWR": "120.00",
                     "E1EDP19": {"@SEGMENT": "1", "QUALF": "002", "IDTNR": "MAT-0002",
                                 "KTEXT": "密封圈 \"O\" 型"}},
                    {"@SEGMENT": "1", "POSEX": "000030", "MENGE": "10", "MENEE": "PCE",
                     "VPREI": "3.50", "NETWR": "35.00",
                     "E1EDP19": {"@SEGMENT": "1", "QUALF": "002", "IDTNR": "MAT-0003",
                                 "KTEXT": "Bolt M8 x 40 'DIN 933'"}},
                ],
            }
        }
    }
