"""Words the sample generator builds Chinese titles and investor names from.

Kept apart from the generator so a reader of `generate.py` sees the year's mechanics, not
word lists. Changing anything here changes the committed sample: regenerate it.
"""

from __future__ import annotations

# The default ruleset's industrial catalogue (SPEC §6), and a few codes outside it that
# screening must terminate.
CATALOGUE: tuple[str, ...] = (
    "new_generation_it",
    "high_end_equipment",
    "new_energy",
    "new_materials",
    "modern_marine",
    "healthcare",
    "high_end_chemicals",
    "modern_agriculture",
    "cultural_creative",
    "boutique_tourism",
    "modern_finance",
    "biomedicine",
    "textiles_apparel",
    "modern_packaging",
    "electromechanical_equipment",
    "agri_food_processing",
    "modern_services",
)
OUT_OF_CATALOGUE: tuple[str, ...] = ("steel_smelting", "coal_mining", "cement_clinker")

# Industries a factory can be in (industrial and expansion projects), with weights that
# lean towards the county's focus list.
MANUFACTURING: dict[str, int] = {
    "new_generation_it": 6,
    "high_end_equipment": 9,
    "new_energy": 9,
    "new_materials": 10,
    "modern_marine": 2,
    "healthcare": 3,
    "high_end_chemicals": 8,
    "biomedicine": 8,
    "textiles_apparel": 7,
    "modern_packaging": 6,
    "electromechanical_equipment": 8,
    "agri_food_processing": 8,
    "modern_agriculture": 3,
}
SERVICES: dict[str, int] = {
    "modern_services": 10,
    "cultural_creative": 4,
    "boutique_tourism": 4,
    "healthcare": 3,
    "new_generation_it": 2,
}

# Title cores per industry: `{n}` is a capacity drawn from the range beside it.
TITLES: dict[str, tuple[tuple[str, int, int], ...]] = {
    "new_generation_it": (
        ("年产{n}万片集成电路封装测试项目", 10, 500),
        ("年产{n}万套智能终端模组项目", 50, 800),
        ("{n}个机柜大数据中心项目", 500, 5000),
    ),
    "high_end_equipment": (
        ("年产{n}台智能数控机床项目", 200, 3000),
        ("年产{n}台（套）工业机器人项目", 500, 10000),
        ("年产{n}套高端液压装备项目", 1000, 20000),
    ),
    "new_energy": (
        ("年产{n}GWh锂电池储能项目", 1, 20),
        ("{n}MW分布式光伏发电项目", 20, 500),
        ("年产{n}万套氢燃料电池系统项目", 1, 10),
    ),
    "new_materials": (
        ("年产{n}万吨新材料项目", 1, 30),
        ("年产{n}万吨高性能复合材料项目", 1, 20),
        ("年产{n}千吨碳纤维项目", 1, 12),
    ),
    "modern_marine": (
        ("年产{n}万吨海洋生物制品项目", 1, 10),
        ("年产{n}套海洋装备配套件项目", 100, 2000),
    ),
    "healthcare": (
        ("{n}张床位医养结合康养中心项目", 200, 1500),
        ("年产{n}万台医疗器械项目", 1, 50),
    ),
    "high_end_chemicals": (
        ("年产{n}万吨高端聚烯烃项目", 5, 60),
        ("年产{n}万吨精细化工中间体项目", 1, 20),
        ("年产{n}万吨电子化学品项目", 1, 10),
    ),
    "modern_agriculture": (
        ("{n}亩智慧农业产业园项目", 500, 10000),
        ("{n}亩现代高效设施农业项目", 300, 5000),
    ),
    "cultural_creative": (
        ("文化创意产业园项目（一期{n}亩）", 50, 400),
        ("数字影视制作基地项目（{n}亩）", 50, 300),
    ),
    "boutique_tourism": (
        ("乡村旅游度假区项目（{n}亩）", 200, 3000),
        ("文旅综合开发项目（{n}亩）", 300, 5000),
    ),
    "modern_finance": (
        ("{n}亿元股权投资基金设立项目", 1, 30),
        ("融资租赁公司落户项目（注册资本{n}亿元）", 1, 10),
    ),
    "biomedicine": (
        ("年产{n}吨原料药项目", 50, 2000),
        ("年产{n}亿支注射剂项目", 1, 20),
        ("生物医药研发生产基地项目（{n}亩）", 50, 500),
    ),
    "textiles_apparel": (
        ("年产{n}万米高档面料项目", 500, 8000),
        ("年产{n}万件品牌服装项目", 100, 3000),
    ),
    "modern_packaging": (
        ("年产{n}万平方米绿色包装材料项目", 1000, 30000),
        ("年产{n}亿只食品包装容器项目", 1, 20),
    ),
    "electromechanical_equipment": (
        ("年产{n}万台高效电机项目", 5, 200),
        ("年产{n}万台（套）机电设备项目", 1, 50),
    ),
    "agri_food_processing": (
        ("年产{n}万吨农副产品精深加工项目", 1, 30),
        ("年产{n}万吨预制菜项目", 1, 10),
        ("年产{n}万吨面粉及面制品项目", 5, 50),
    ),
    "modern_services": (
        ("{n}亩现代物流园项目", 100, 800),
        ("电子商务产业园项目（{n}亩）", 50, 300),
        ("冷链物流中心项目（库容{n}万吨）", 1, 20),
    ),
    "steel_smelting": (("年产{n}万吨钢铁冶炼项目", 50, 300),),
    "coal_mining": (("年产{n}万吨煤炭开采项目", 30, 300),),
    "cement_clinker": (("年产{n}万吨水泥熟料项目", 60, 400),),
}
HEADQUARTERS_TITLES: tuple[str, ...] = (
    "区域总部项目",
    "华北区域总部项目",
    "结算中心项目",
    "研发总部项目",
)
REAL_ESTATE_TITLES: tuple[str, ...] = ("府住宅小区项目", "·锦园商品住宅开发项目", "湖畔花园项目")
URBAN_COMPLEX_TITLES: tuple[str, ...] = (
    "广场城市综合体项目",
    "天地商业综合体项目",
    "城市综合体项目",
)
FINANCIAL_TITLES: tuple[str, ...] = (
    "村镇银行设立项目",
    "融资租赁有限公司落户项目",
    "小额贷款有限公司设立项目",
    "财产保险公司县支公司设立项目",
)

# Brand characters: a brand is three distinct characters from one list, picked by a
# bijection of the investor's serial number, so investor names never collide by accident
# (a collision of title and investor name would be a duplicate claim, SPEC §2 item 6).
DOMESTIC_BRAND_CHARS = (
    "恒瑞达泰盛华鑫源宏远丰润嘉信诚德金海天宇辰星晨阳光明新高科创中联正通汇博安康"
    "永兴隆昌富祥和顺益凯威力腾飞龙鹏翔峰岳川江林森春秋美佳乐怡锦荣耀众合立方"
)
FOREIGN_BRAND_CHARS = "克朗斯巴夫博世莱特威尔森埃默霍尼韦卡罗杜邦拜耳诺沃奥托菲利普马蒂亚索伦塔佩"

INDUSTRY_WORDS: dict[str, str] = {
    "new_generation_it": "电子科技",
    "high_end_equipment": "智能装备",
    "new_energy": "新能源科技",
    "new_materials": "新材料科技",
    "modern_marine": "海洋科技",
    "healthcare": "健康产业",
    "high_end_chemicals": "化工",
    "modern_agriculture": "农业科技",
    "cultural_creative": "文化传媒",
    "boutique_tourism": "文旅发展",
    "modern_finance": "投资",
    "biomedicine": "生物医药",
    "textiles_apparel": "纺织服饰",
    "modern_packaging": "包装材料",
    "electromechanical_equipment": "机电设备",
    "agri_food_processing": "食品",
    "modern_services": "供应链管理",
    "steel_smelting": "钢铁",
    "coal_mining": "矿业",
    "cement_clinker": "建材",
    "real_estate": "置业",
}
DOMESTIC_SUFFIXES: tuple[str, ...] = ("有限公司", "股份有限公司", "集团有限公司")

# Where investors come from, by origin: a place name for the company name and a
# GB/T 2260 division code for its credit code. The county's own codes are illustrative.
PLACES: dict[str, tuple[tuple[str, str], ...]] = {
    "outside_province": (
        ("上海", "310115"),
        ("北京", "110108"),
        ("深圳", "440300"),
        ("苏州", "320505"),
        ("杭州", "330106"),
        ("广州", "440106"),
        ("天津", "120116"),
        ("宁波", "330206"),
        ("无锡", "320214"),
        ("南京", "320115"),
        ("合肥", "340104"),
    ),
    "outside_city": (
        ("济南", "370112"),
        ("青岛", "370211"),
        ("烟台", "370613"),
        ("潍坊", "370705"),
        ("淄博", "370303"),
        ("临沂", "371312"),
    ),
    "inside_city": (("市", "370802"), ("市", "370811"), ("市", "370883")),
    "inside_county": (("县", "370830"),),
}
# Foreign investors: country (ISO 3166 alpha-2), its Chinese name, the currency it pays in.
COUNTRIES: tuple[tuple[str, str, str], ...] = (
    ("US", "美国", "USD"),
    ("DE", "德国", "EUR"),
    ("JP", "日本", "USD"),
    ("KR", "韩国", "USD"),
    ("SG", "新加坡", "USD"),
    ("HK", "中国香港", "HKD"),
    ("FR", "法国", "EUR"),
    ("NL", "荷兰", "EUR"),
    ("GB", "英国", "USD"),
)
FOREIGN_SUFFIXES: tuple[str, ...] = ("集团", "控股有限公司", "国际有限公司", "股份公司")
# A foreign-invested enterprise registered in China has a credit code of its own.
FOREIGN_INVESTED_DIVISION = "310115"
